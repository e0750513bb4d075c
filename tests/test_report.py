"""pipelines/report.py reads what the runs recorded: the head count is the adapter's, not params' top_k."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lofit.adapter import save_adapter
from lofit.families import HeadGeometry
from lofit.intervention import HeadIntervention

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def report(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "pipelines"))
    import report

    return report


def write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def test_heads_column_is_the_adapters_head_count_for_a_fractional_top_k(tmp_path, monkeypatch, report):
    monkeypatch.chdir(tmp_path)
    geometry = HeadGeometry(num_layers=5, num_heads=8, head_dim=4)  # 40 heads: top_k 0.05 became 2
    run = Path("runs/mq")
    save_adapter(HeadIntervention(geometry, components=("offset",), heads=[(0, 1), (3, 2)]), run / "tune/adapter",
                 base_model="tiny", model_type="llama")
    write(run / "tune/metrics.json", {"trainable_parameters": 8})
    for method in ("base", "lofit"):
        write(run / "eval" / method / "summary.json", {"exact_match": 0.5, "num_examples": 4})
    rows = report.run_rows({"runs": {"mq": {"task": "mquake", "tune": {"top_k": 0.05}}}})
    assert [(row["method"], row["heads"]) for row in rows] == [("base", 0), ("lofit", 2)]


def test_missing_adapter_is_one_line_naming_it(tmp_path, monkeypatch, report):
    monkeypatch.chdir(tmp_path)
    write(Path("runs/mq/tune/metrics.json"), {"trainable_parameters": 8})
    with pytest.raises(SystemExit, match=r"runs/mq/tune/adapter/adapter_config\.json: missing"):
        report.run_rows({"runs": {"mq": {"task": "mquake", "tune": {"top_k": 2}}}})


OOD_PARAMS = {"ood": {"adapter_run": "truthfulqa_fold0", "options": {"triviaqa": {"shots": 5}, "nq_open": {"shots": 5}, "mmlu": {"shots": 5}}}}


def write_predictions(folder: Path, correct: list[bool], metric: str, prompts: list[str] | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    prompts = prompts or [f"q{i}" for i in range(len(correct))]
    rows = [{"prompt": p, "correct": c} for p, c in zip(prompts, correct)]
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    write(folder / "summary.json", {metric: sum(correct) / len(correct), "num_examples": len(correct)})


def write_ood(base: list[bool], lofit: list[bool], lofit_prompts: list[str] | None = None) -> None:
    for task, metric in (("triviaqa", "exact_match"), ("nq_open", "exact_match"), ("mmlu", "accuracy")):
        write_predictions(Path("runs/ood/base") / task, base, metric)
        write_predictions(Path("runs/ood/lofit") / task, lofit, metric, lofit_prompts)


def test_ood_table_shows_base_lofit_and_their_paired_difference_with_an_interval(tmp_path, monkeypatch, report):
    monkeypatch.chdir(tmp_path)
    base = [True] * 30 + [False] * 70
    lofit = [True] * 20 + [False] * 80  # 10 questions lost, none gained: McNemar p = 2 / 2**10
    write_ood(base, lofit)
    rows = report.ood_rows()
    assert [r["task"] for r in rows] == ["triviaqa", "nq_open", "mmlu"]
    row = rows[0]
    assert (row["base"], row["lofit"], row["difference"], row["num_examples"]) == (0.3, 0.2, pytest.approx(-0.1), 100)
    assert row["ci_low"] < -0.1 < row["ci_high"] < 0  # the loss is outside the noise
    assert row["mcnemar_p"] == pytest.approx(2 / 2**10)
    table = "\n".join(report.ood_markdown(rows, OOD_PARAMS))
    assert "triviaqa 5-shot, nq_open 5-shot, mmlu 5-shot" in table
    assert f"| triviaqa | exact_match | 30.0 | 20.0 | -10.0 | [{100 * row['ci_low']:+.1f}, {100 * row['ci_high']:+.1f}] | 0.00195 | 100 |" in table


def test_ood_predictions_of_different_questions_are_not_paired(tmp_path, monkeypatch, report):
    monkeypatch.chdir(tmp_path)
    write_ood([True, False], [True, False], lofit_prompts=["q0", "other"])
    with pytest.raises(SystemExit, match=r"runs/ood/base/triviaqa vs runs/ood/lofit/triviaqa: cannot pair predictions: question 2 differs"):
        report.ood_rows()

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


def write_rows(folder: Path, rows: list[dict], summary: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    write(folder / "summary.json", summary)


def test_per_run_rows_pair_base_and_lofit_with_the_test_each_metric_needs(tmp_path, monkeypatch, report):
    monkeypatch.chdir(tmp_path)
    mc2_base, mc2_lofit = [0.4] * 50, [0.5] * 50  # every question gains 0.1: the paired bootstrap's smallest p
    for method, mc1, mc2 in (("base", [True] * 10 + [False] * 40, mc2_base), ("lofit", [True] * 25 + [False] * 25, mc2_lofit)):
        rows = [{"prompt": f"q{i}", "mc1": float(a), "mc2": b} for i, (a, b) in enumerate(zip(mc1, mc2))]
        write_rows(Path("runs/tq/eval") / method, rows, {"mc1": sum(mc1) / 50, "mc2": sum(mc2) / 50, "num_examples": 50})
    pairs = report.run_pairs({"runs": {"tq": {"task": "truthfulqa"}}})
    mc1, mc2 = pairs
    assert (mc1["metric"], mc1["test"], mc1["p"]) == ("mc1", "McNemar", pytest.approx(2 / 2**15))  # 15 gained, none lost
    assert mc1["ci_low"] < 0.3 < mc1["ci_high"] and mc1["base_ci"][0] < 0.2 < mc1["base_ci"][1]
    assert (mc2["test"], mc2["difference"], mc2["p"]) == ("paired bootstrap", pytest.approx(0.1), pytest.approx(1 / 10_001))
    assert mc2["ci_low"] == pytest.approx(0.1) == pytest.approx(mc2["ci_high"])
    table = report.markdown([], pairs, {"model": {"source": "tiny", "dtype": "float32", "quantization": "none"}, "profile": "full", "seed": 1})
    assert "| tq | mc2 | 40.0 [40.0, 40.0] | 50.0 [50.0, 50.0] | +10.0 | [+10.0, +10.0] | paired bootstrap | 0.0001 | 50 |" in table


def test_per_run_rows_refuse_a_summary_that_disagrees_and_show_loss_runs_without_an_interval(tmp_path, monkeypatch, report):
    monkeypatch.chdir(tmp_path)
    for method in ("base", "lofit"):
        write_rows(Path("runs/mq/eval") / method, [{"prompt": "q0", "correct": True}], {"exact_match": 0.0, "num_examples": 1})
    with pytest.raises(SystemExit, match=r"runs/mq/eval/base: summary exact_match 0.0 != its predictions' 1.0"):
        report.run_pairs({"runs": {"mq": {"task": "mquake"}}})
    for method, loss in (("base", 2.0), ("lofit", 1.5)):
        write_rows(Path("runs/mq/eval") / method, [{"prompt": "q0", "loss": loss}], {"exact_match": -loss, "num_examples": 1})
    (pair,) = report.run_pairs({"runs": {"mq": {"task": "mquake"}}})
    assert (pair["difference"], pair["base"], pair["lofit"]) == (None, -2.0, -1.5)

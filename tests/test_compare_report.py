"""pipelines/compare_report.py on a fake repository tree: tables, seeds, prefix rescoring, plots, errors."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from lofit.adapter import save_adapter
from lofit.evaluation.multiple_choice import MCScores
from lofit.evaluation.multiple_choice import mc1 as mc1_of
from lofit.evaluation.multiple_choice import mc2 as mc2_of
from lofit.evaluation.multiple_choice import mc3 as mc3_of
from lofit.families import HeadGeometry
from lofit.intervention import HeadIntervention
from lofit.training.heads import HeadRanking

ROOT = Path(__file__).resolve().parents[1]
SEEDS = (42, 43)
GEOMETRY = HeadGeometry(num_layers=3, num_heads=4, head_dim=8)  # 12 heads

# Main-study predictions (6 test rows each); the compare prefix is the first 4.
TQA = {
    "tqa0": {"base": ([0, 0, 1, 0, 1, 1], [0.2, 0.4, 0.6, 0.4, 0.9, 0.9]),  # prefix mc1 25.0, mc2 40.0
             "lofit": ([1, 0, 1, 0, 0, 0], [0.5, 0.5, 0.7, 0.3, 0.1, 0.1])},  # prefix mc1 50.0, mc2 50.0
    "tqa1": {"base": ([0, 0, 0, 1, 1, 1], [0.3] * 6),  # 25.0, 30.0
             "lofit": ([1, 1, 0, 0, 0, 0], [0.6] * 6)},  # 50.0, 60.0
}
EM = {
    "mq": {"base": [0, 0, 0, 1, 1, 1], "lofit": [1, 1, 0, 0, 1, 1]},  # prefix 25.0, 50.0
    "cl": {"base": [0, 0, 0, 0, 0, 0], "lofit": [1, 0, 0, 0, 0, 0]},  # prefix 0.0, 25.0
}


def sd(*values: float) -> float:
    return round(statistics.stdev(values), 4)


def write(path: Path, data: dict | list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def experiment(folder: Path, summary: dict, info: bool = True, **fields) -> None:
    """A compare evaluation folder (the compare OOD stages write no info.json)."""
    write(folder / "summary.json", {**summary, "num_examples": summary.get("num_examples", 4)})
    if info:
        write(folder / "info.json", {"seed": 42, "edited_parameters": 0, "choice": None, **fields})
    (folder / "predictions.jsonl").write_text("", encoding="utf-8")


def seeded(folder: str, values: list[float], metric: str = "exact_match", extra: dict | None = None, **info) -> None:
    """One compare experiment per seed (relative to the current directory, the fake repo)."""
    for seed, value in zip(SEEDS, values):
        experiment(Path("compare/runs") / folder.format(seed=seed), {metric: value, **(extra or {})}, seed=seed, **info)


def predictions(run_dir: Path, method: str, rows: list[dict]) -> None:
    folder = run_dir / "eval" / method
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    keys = [k for k in rows[0] if k in ("mc1", "mc2", "mc3")] or ["correct"]
    summary = {("exact_match" if k == "correct" else k): sum(r[k] for r in rows) / len(rows) for k in keys}
    write(folder / "summary.json", {**summary, "num_examples": len(rows)})


def mc_row(mc1: int, mc2: float) -> dict:
    """A TruthfulQA predictions row as the evaluator writes it, with answer scores (log-probabilities)
    whose MC1 and MC2 are the planted ones (MC2 ≤ 1/2 when MC1 = 0 unless a second true answer carries it)."""
    if mc1:
        parts = math.ceil((1 - mc2) / mc2) + 1  # each false answer below the best one
        true, false = [mc2], [(1 - mc2) / parts] * parts
    elif mc2 <= 0.5:
        true, false = [mc2], [1 - mc2]
    else:
        true, false = [0.01, mc2 - 0.01], [1 - mc2]
    scores = MCScores(best=math.log(true[0]), true=tuple(map(math.log, true)), false=tuple(map(math.log, false)))
    return {"scores_true": list(scores.true), "scores_false": list(scores.false),
            "mc1": mc1_of(scores), "mc2": mc2_of(scores), "mc3": mc3_of(scores)}


def adapter(run_dir: Path, k: int) -> None:
    """The main run's step-2 adapter folder: its config records the K heads it edits."""
    intervention = HeadIntervention(GEOMETRY, components=("offset",), heads=[(0, h) for h in range(k)])
    save_adapter(intervention, run_dir / "tune/adapter", base_model="tiny", model_type="llama")


def build_tree(root: Path, **compare_overrides) -> None:
    """A repository with the main study (4 runs) and every compare output, two seeds each."""
    runs = {"tqa0": ("truthfulqa", 2), "tqa1": ("truthfulqa", 2), "mq": ("mquake", 3), "cl": ("clutrr", 3)}
    compare = {
        "seeds": list(SEEDS), "eval_limit": {"cpu": 4, "cuda": None},
        "iti": {"runs": ["tqa0", "tqa1"], "top_k": [2], "alpha": [5.0, 15.0]},
        "repe": {"runs": ["tqa0"], "top_layers": [0.25], "alpha": [2.0]},
        "peft": {"runs": ["mq"], "methods": ["lora", "red"], "lora": {}, "red": {}},
        "random_heads": {"runs": ["tqa0"]}, "iti_heads": {"runs": ["tqa0"]},
        "head_swap": {"runs": ["mq", "cl"]},
        "k_sweep": {"runs": ["mq"], "top_k": [0.25, 5]},
        "data_efficiency": {"runs": ["mq"], "train_size": [2, 4], "methods": ["lofit", "lora"]},
        "lofit": {"runs": ["mq"], "seeds": [43]},
        "ood": {"methods": ["iti"]},
        **compare_overrides,
    }
    params = {
        "profile": "full", "profiles": {"full": {}}, "seed": 42,
        "model": {"source": "tiny", "dtype": "float32", "quantization": "none", "device": "cpu"},
        "runs": {name: {"task": task, "tune": {"top_k": k}} for name, (task, k) in runs.items()},
        "ood": {"adapter_run": "tqa0", "limit": {"cpu": 3, "cuda": None}},
        "compare": compare,
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    save_file({"a": torch.zeros(10, 10), "b": torch.zeros(5)}, str(root / "model.safetensors"))
    (root / "data/models/base").mkdir(parents=True)
    (root / "model.safetensors").rename(root / "data/models/base/model.safetensors")  # 105 parameters
    for index, (name, (task, k)) in enumerate(runs.items()):
        run_dir = root / "runs" / name
        scores = [[float((layer * 4 + head + index) % 12) for head in range(4)] for layer in range(3)]
        write(run_dir / "select/heads.json", HeadRanking("tiny", GEOMETRY, scores, task).to_json())
        write(run_dir / "tune/metrics.json", {"trainable_parameters": 8 * k})
        adapter(run_dir, k)
        for method in ("base", "lofit"):
            if name in TQA:
                mc1, mc2 = TQA[name][method]
                predictions(run_dir, method, [mc_row(a, b) for a, b in zip(mc1, mc2)])
            else:
                predictions(run_dir, method, [{"correct": bool(c)} for c in EM[name][method]])
    for task, metric in (("triviaqa", "exact_match"), ("nq_open", "exact_match"), ("mmlu", "accuracy")):
        for method, value in (("base", 0.0), ("lofit", 1 / 3)):
            write(root / "runs/ood" / method / task / "summary.json", {metric: value, "num_examples": 3})
        experiment(root / "compare/runs/ood/iti" / task, {metric: 2 / 3, "num_examples": 3}, info=False)


def build_compare() -> None:
    # ITI/RepE: fitted once (seed null), K/layers chosen on a validation grid (search.json as lofit.methods.commands writes it)
    choice = {"top_k": 2, "alpha": 15.0, "grid_top_k": 0.2}
    grid = [{"top_k": 0.2, "alpha": 5.0, "mc1": 0.5, "mc2": 0.5}, {"top_k": 0.2, "alpha": 15.0, "mc1": 0.75, "mc2": 0.6}]
    for run, (mc1, mc2) in (("tqa0", (0.75, 0.45)), ("tqa1", (0.25, 0.5))):
        experiment(Path("compare/runs") / run / "iti", {"mc1": mc1, "mc2": mc2, "mc3": 0.0}, seed=None, edited_parameters=16,
                   choice=choice)
        write(Path("compare/runs") / run / "iti/search.json", {"keys": ["mc1", "mc2"], "chosen": grid[1], "grid": grid})
    experiment(Path("compare/runs/tqa0/repe"), {"mc1": 0.25, "mc2": 0.4, "mc3": 0.0}, seed=None, edited_parameters=64,
               choice={"layers": [1], "alpha": 2.0, "grid_top_layers": 0.25})
    row = {"top_layers": 0.25, "alpha": 2.0, "mc1": 0.25, "mc2": 0.4}
    write(Path("compare/runs/tqa0/repe/search.json"), {"keys": ["mc1", "mc2"], "chosen": row, "grid": [row]})
    experiment(Path("compare/runs/mq/lofit-s43"), {"exact_match": 0.75}, seed=43)  # compare.lofit.seeds: [43]
    seeded("mq/lora-s{seed}", [0.70, 0.80], edited_parameters=21)
    seeded("mq/red-s{seed}", [0.25, 0.50], edited_parameters=42)
    seeded("tqa0/heads-random-s{seed}", [0.25, 0.25], metric="mc1", extra={"mc2": 0.5, "mc3": 0.0})
    seeded("tqa0/heads-iti-s{seed}", [0.75, 0.25], metric="mc1", extra={"mc2": 0.5, "mc3": 0.0})
    for run, values in (("mq", {"mq": [0.5, 0.5], "cl": [0.75, 0.75]}), ("cl", {"mq": [0.0, 0.0], "cl": [0.25, 0.25]})):
        for source, pair in values.items():
            seeded(f"{run}/heads-from-{source}-s{{seed}}", pair)
    seeded("mq/k0.25-s{seed}", [0.5, 0.5], top_k=3)
    seeded("mq/k5-s{seed}", [0.25, 0.75], top_k=5)
    for method, (small, large) in (("lofit", ([0.0, 0.25], [0.25, 0.5])), ("lora", ([0.25, 0.25], [0.5, 0.5]))):
        seeded(f"mq/n2-{method}-s{{seed}}", small)
        seeded(f"mq/n4-{method}-s{{seed}}", large)


@pytest.fixture
def compare_report(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "pipelines"))
    import compare_report

    return compare_report


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    build_tree(tmp_path)
    build_compare()
    return tmp_path


def test_prefix_metrics(tmp_path, compare_report):
    build_tree(tmp_path)
    for name, task in (("tqa0", "truthfulqa"), ("mq", "mquake")):
        for method in ("base", "lofit"):
            folder = tmp_path / "runs" / name / "eval" / method
            summary = json.loads((folder / "summary.json").read_text())
            assert compare_report.prefix_metrics(folder / "predictions.jsonl", task, None) == pytest.approx(summary)
    assert compare_report.prefix_metrics(tmp_path / "runs/tqa0/eval/base/predictions.jsonl", "truthfulqa", 4) == \
        pytest.approx({"mc1": 0.25, "mc2": 0.4, "mc3": 0.25, "num_examples": 4})
    assert compare_report.prefix_metrics(tmp_path / "runs/mq/eval/lofit/predictions.jsonl", "mquake", 4) == \
        {"exact_match": 0.5, "num_examples": 4}


def test_report(repo, compare_report, monkeypatch):
    monkeypatch.setattr(compare_report.Study, "train_examples", lambda self, run: 6)  # the fake runs have no raw data
    compare_report.main()
    text = (repo / "reports/comparison.md").read_text()
    data = json.loads((repo / "reports/comparison.json").read_text())
    lofit_sd = 100 * statistics.stdev([0.5, 0.75])  # LoFiT on mq: main run 0.5 (4-row prefix of 6) + seed 43 at 0.75
    # Table 1: base/LoFiT rescored on the first 4 rows; ITI beats LoFiT on fold 0 MC1
    assert "the first 4 test examples (4/4 for tqa0, tqa1)" in text
    assert "| base | — | 0 | 25.0 ± — (n=1) | 40.0 ± — (n=1) | 25.0 ± — (n=1) | 30.0 ± — (n=1) |" in text
    assert "tqa0: K=2, α=15.0; tqa1: K=2, α=15.0" in text
    assert "ITI beats LoFiT on tqa0 MC1: 75.0 vs 50.0" in text
    assert "ITI beats LoFiT on tqa1 MC1" not in text
    assert "|  | 0.2 | 5.0 | 50.0 | 50.0 |\n| ✓ | 0.2 | 15.0 | 75.0 | 60.0 |" in text
    assert "tqa0: layers=[1], α=2.0 |" in text
    assert data["truthfulqa"]["mean"]["lofit"]["mc2"] == {"mean": 0.55, "n": 1}
    assert data["truthfulqa"]["mean"]["iti"]["mc2"]["mean"] == pytest.approx(0.475)
    assert "repe" not in data["truthfulqa"]["tqa1"]
    # Table 3: two seeds → mean ± sample sd; the planted LoRA win is stated; % of the 105-parameter model
    assert f"| LoFiT | 24 | 22.9 % | 62.5 ± {lofit_sd:.1f} (n=2) |" in text  # 24 of the 105 parameters, not bold
    assert "| LoRA | 21 | 20 % | **75.0 ± 7.1 (n=2)** |" in text
    assert "LoRA beats LoFiT on mq EM: 75.0 vs 62.5" in text
    assert "RED beats LoFiT" not in text
    assert data["peft"]["mq"]["lora"] == {"exact_match": {"mean": 0.75, "sd": sd(0.7, 0.8), "n": 2}, "trainable_parameters": 21}
    assert data["peft"]["mq"]["lofit"]["exact_match"]["sd"] == sd(0.5, 0.75)
    # OOD: same sample as the main OOD stages
    assert "ITI beats LoFiT on mmlu acc: 66.7 vs 33.3" in text
    assert data["ood"]["triviaqa"]["iti"]["exact_match"]["mean"] == round(2 / 3, 4)
    # step 2 on other heads, head swap, K sweep, data efficiency
    assert data["head_source"]["tqa0"]["iti_heads"]["mc1"] == {"mean": 0.5, "sd": sd(0.75, 0.25), "n": 2}
    assert "heads from cl beats mq's own heads on mq EM: 75.0 vs 50.0" in text
    assert "heads from mq beats cl" not in text
    assert data["head_swap"]["cl"]["cl"]["exact_match"]["mean"] == 0.25
    assert list(data["k_sweep"]["mq"]) == ["base", "k0.25", "main", "k5"]
    assert data["k_sweep"]["mq"]["k5"] == {"heads": 5, "exact_match": {"mean": 0.5, "sd": sd(0.25, 0.75), "n": 2}}
    assert f"| main run (top_k=3) | 3 | **62.5 ± {lofit_sd:.1f} (n=2)** |" in text
    assert data["data_efficiency"]["mq"]["lora"]["n6"]["exact_match"]["mean"] == 0.75  # full point = the Table 3 LoRA run
    assert data["data_efficiency"]["mq"]["lofit"]["n6"]["exact_match"]["mean"] == 0.625
    assert "LoRA beats LoFiT on mq EM with 2 examples: 25.0 vs 12.5" in text
    # layers of the top-K heads: counts add up to K
    assert {run: sum(counts.values()) for run, counts in data["head_layers"].items()} == {"tqa0": 2, "tqa1": 2, "mq": 3, "cl": 3}
    for name in ("head_swap", "k_sweep", "data_efficiency", "head_layers"):
        assert (repo / "reports/comparison" / f"{name}.png").stat().st_size > 0


@pytest.mark.parametrize("profile,expected", [({}, 134), ({"train_limit": 10}, 10)])
def test_full_data_point_is_the_main_runs_training_set(profile, expected, tmp_path, monkeypatch, compare_report, shared_data):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "raw").symlink_to(shared_data)
    params = {
        "profile": "p", "profiles": {"p": profile}, "seed": 42, "model": {"device": "cpu"},
        "runs": {"mq": {"task": "mquake", "options": {}}},
        "compare": {"seeds": [42], "eval_limit": {"cpu": None}},
    }
    assert compare_report.Study(params).train_examples("mq") == expected


def test_unconfigured_section_has_no_plot(repo, compare_report):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["compare"]["data_efficiency"]["runs"] = []
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    compare_report.main()
    text = (repo / "reports/comparison.md").read_text()
    assert "Not configured (compare.data_efficiency.runs is empty)." in text
    assert not (repo / "reports/comparison/data_efficiency.png").exists()
    assert "data_efficiency" not in json.loads((repo / "reports/comparison.json").read_text())


def test_missing_experiment_names_path_and_stage(repo, compare_report):
    for name in ("summary.json", "info.json", "predictions.jsonl"):
        (repo / "compare/runs/mq/red-s43" / name).unlink()
    message = r"compare/runs/mq/red-s43/summary\.json: missing; it is written by stage peft of compare/dvc\.yaml"
    with pytest.raises(SystemExit, match=message):
        compare_report.main()
    assert not (repo / "reports/comparison.md").exists()


def test_other_sample_size_is_refused(repo, compare_report):
    write(repo / "compare/runs/tqa1/iti/summary.json", {"mc1": 0.5, "mc2": 0.5, "mc3": 0.5, "num_examples": 6})
    with pytest.raises(SystemExit, match=r"compare/runs/tqa1/iti/summary\.json scored 6 examples, the main rows 4"):
        compare_report.main()

"""pipelines/compare_report.py end to end on a fake repository tree with planted predictions.

Every compare folder holds per-example predictions: Tables 1 and 3 score the full test set
(FULL rows), the ablations the first PREFIX rows. A row's outcome is `i % 10 < c`, so a method
with c = 7 is right on 70 % of any prefix of whole tens, and one with a smaller c is right on a
subset of its rows: differences of several tenths are significant, equal c's are not.
"""

from __future__ import annotations

import copy
import json
import math
import re
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
FULL, PREFIX = 40, 20
SEEDS = (42, 43)
GEOMETRY = HeadGeometry(num_layers=3, num_heads=4, head_dim=8)  # 12 heads
RUNS = {"tqa0": ("truthfulqa", 2), "tqa1": ("truthfulqa", 2), "mq": ("mquake", 3), "cl": ("clutrr", 3)}
PARAMS = {"lora": 21, "red": 42, "reft": 40}  # trainable parameters of the Table 3 baselines (model: 105)
LR_GRID = {"lofit": [0.01, 0.03], "lora": [0.0003, 0.001], "red": [0.01, 0.03], "reft": [0.001, 0.003]}


def pattern(correct_per_ten: int, rows: int) -> list[bool]:
    return [i % 10 < correct_per_ten for i in range(rows)]


def mc_row(mc1: bool) -> dict:
    """A TruthfulQA predictions row as the evaluator writes it: MC1 as planted, MC2 0.7 or 0.3."""
    true, false = ([0.7], [0.15, 0.15]) if mc1 else ([0.3], [0.7])
    scores = MCScores(best=math.log(true[0]), true=tuple(map(math.log, true)), false=tuple(map(math.log, false)))
    return {"scores_true": list(scores.true), "scores_false": list(scores.false),
            "mc1": mc1_of(scores), "mc2": mc2_of(scores), "mc3": mc3_of(scores)}


def write(path: Path, data: dict | list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def evaluation(folder: Path, task: str, correct_per_ten: int, rows: int, info: dict | None = None) -> None:
    """predictions.jsonl + summary.json as `lofit evaluate` writes them (+ the stage's info.json)."""
    outcomes = pattern(correct_per_ten, rows)
    lines = [mc_row(ok) for ok in outcomes] if task == "truthfulqa" else [{"correct": ok} for ok in outcomes]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    keys = ["mc1", "mc2", "mc3"] if task == "truthfulqa" else ["accuracy" if task == "mmlu" else "exact_match"]
    summary = {k: sum(float(r.get(k, r.get("correct"))) for r in lines) / rows for k in keys}
    write(folder / "summary.json", {**summary, "num_examples": rows})
    if info is not None:
        write(folder / "info.json", {"seed": None, "edited_parameters": 0, "choice": None, **info})


def seeded(run: str, name: str, per_seed: tuple[int, int], rows: int, **info) -> None:
    """One compare experiment per seed: compare/runs/RUN/NAME-sSEED."""
    for seed, c in zip(SEEDS, per_seed):
        evaluation(Path("compare/runs") / run / f"{name}-s{seed}", RUNS[run][0], c, rows, {"seed": seed, **info})


def val_point(folder: Path, scores: dict) -> None:
    write(folder / "val.json", {**scores, "split": "val", "num_examples": 10})


def plans() -> tuple[dict, dict]:
    cpu = {
        "seeds": list(SEEDS), "ablation_seeds": list(SEEDS), "lr_grid": LR_GRID,
        "lofit": {"runs": list(RUNS)},
        "iti": {"runs": ["tqa0", "tqa1"], "top_k": [2], "alpha": [5.0, 15.0]},
        "repe": {"runs": ["tqa0"], "top_layers": [0.25], "alpha": [2.0]},
        "peft": {"runs": ["mq", "cl"], "methods": ["lora", "red", "reft"]},
        "random_heads": {"runs": ["tqa0"]}, "iti_heads": {"runs": ["tqa0"]},
        "head_swap": {"runs": ["mq", "cl"]},
        "k_sweep": {"runs": ["mq"], "top_k": [1, 0.5]},
        "data_efficiency": {"runs": ["mq"], "train_size": [2, 4], "methods": ["lofit", "lora"]},
        "ood": {"methods": ["iti"]},
    }
    gpu = {**copy.deepcopy(cpu), "seeds": [42, 43, 44], "k_sweep": {"runs": ["mq", "cl"], "top_k": [1, 0.5, 0.25]},
           "data_efficiency": {"runs": ["mq"], "train_size": [2, 3, 4], "methods": ["lofit", "lora"]}}
    return cpu, gpu


def build_tree(root: Path) -> None:
    """The main study (4 runs, FULL test rows each) and the params with a CPU and a GPU plan."""
    cpu, gpu = plans()
    params = {
        "profile": "full", "profiles": {"full": {}}, "seed": 42,
        "model": {"source": "tiny", "dtype": "float32", "quantization": "none", "device": "cpu"},
        "runs": {name: {"task": task, "tune": {"top_k": k, "lr": 0.01}} for name, (task, k) in RUNS.items()},
        "ood": {"adapter_run": "tqa0", "limit": {"cpu": 3, "cuda": None}},
        "compare": {"eval_limit": {"cpu": PREFIX, "cuda": None}, "methods": {"lora": {}, "red": {}, "reft": {"rank": 4}},
                    "plans": {"gpu": gpu, "cpu": cpu}, "plan": cpu},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    (root / "data/models/base").mkdir(parents=True)
    save_file({"a": torch.zeros(10, 10), "b": torch.zeros(5)}, str(root / "data/models/base/model.safetensors"))  # 105
    for index, (name, (task, k)) in enumerate(RUNS.items()):
        run_dir = root / "runs" / name
        scores = [[float((layer * 4 + head + index) % 12) for head in range(4)] for layer in range(3)]
        write(run_dir / "select/heads.json", HeadRanking("tiny", GEOMETRY, scores, task).to_json())
        write(run_dir / "tune/metrics.json", {"trainable_parameters": 8 * k})
        intervention = HeadIntervention(GEOMETRY, components=("offset",), heads=[(0, h) for h in range(k)])
        save_adapter(intervention, run_dir / "tune/adapter", base_model="tiny", model_type="llama")
        evaluation(run_dir / "eval/base", task, {"tqa0": 2, "tqa1": 2, "mq": 1, "cl": 0}[name], FULL)
        evaluation(run_dir / "eval/lofit", task, 5, FULL)  # the main run: no comparison row reads it
    for task in ("triviaqa", "nq_open", "mmlu"):
        evaluation(root / "runs/ood/base" / task, task, 0, 3)
        evaluation(root / "runs/ood/lofit" / task, task, 1, 3)
        evaluation(root / "compare/runs/ood/iti" / task, task, 2, 3)


def build_compare() -> None:
    """Every compare stage's outputs (relative to the current directory, the fake repository)."""
    runs = Path("compare/runs")
    # lr grids on val: the second lr wins for LoFiT, the first for the baselines
    for run, (task, _) in RUNS.items():
        names = ["mc1", "mc2"] if task == "truthfulqa" else ["exact_match"]
        for lr, score in zip(LR_GRID["lofit"], (0.45, 0.55)):
            val_point(runs / run / "grid-lofit" / f"lr{lr}", {m: score + 0.05 * i for i, m in enumerate(names)})
        if run in ("mq", "cl"):
            for method in ("lora", "red", "reft"):
                for lr, score in zip(LR_GRID[method], (0.5, 0.25)):
                    val_point(runs / run / f"grid-{method}" / f"lr{lr}", {"exact_match": score})
    # Table 1 (full test set): LoFiT beats ITI on tqa0, ITI beats LoFiT on tqa1, RepE ties
    for run, lofit, iti in (("tqa0", (7, 7), 2), ("tqa1", (4, 4), 9)):
        seeded(run, "lofit", lofit, FULL, edited_parameters=16, choice={"lr": 0.03})
        choice = {"top_k": 2, "alpha": 15.0, "grid_top_k": 2}
        evaluation(runs / run / "iti", "truthfulqa", iti, FULL, {"edited_parameters": 16, "choice": choice})
        grid = [{"top_k": 2, "alpha": 5.0, "mc1": 0.5, "mc2": 0.5}, {"top_k": 2, "alpha": 15.0, "mc1": 0.75, "mc2": 0.6}]
        write(runs / run / "iti/search.json", {"keys": ["mc1", "mc2"], "chosen": grid[1], "grid": grid})
    evaluation(runs / "tqa0/repe", "truthfulqa", 7, FULL,
               {"edited_parameters": 64, "choice": {"layers": [1], "alpha": 2.0, "grid_top_layers": 0.25}})
    row = {"top_layers": 0.25, "alpha": 2.0, "mc1": 0.25, "mc2": 0.4}
    write(runs / "tqa0/repe/search.json", {"keys": ["mc1", "mc2"], "chosen": row, "grid": [row]})
    # Table 3 (full test set): LoFiT beats LoRA on mq, ReFT beats LoFiT on cl, the rest are not significant
    for run, table in (("mq", {"lofit": (6, 6), "lora": (2, 2), "red": (6, 5), "reft": (6, 6)}),
                       ("cl", {"lofit": (3, 3), "lora": (3, 3), "red": (2, 3), "reft": (8, 8)})):
        for method, per_seed in table.items():
            seeded(run, method, per_seed, FULL, edited_parameters=PARAMS.get(method, 24), choice={"lr": 0.03})
    # ablations (the first PREFIX rows), at LoFiT's chosen lr
    seeded("tqa0", "heads-random", (2, 2), PREFIX, edited_parameters=16)
    seeded("tqa0", "heads-iti", (7, 6), PREFIX, edited_parameters=16)
    for run, sources in (("mq", {"mq": (6, 6), "cl": (1, 1)}), ("cl", {"mq": (3, 3), "cl": (3, 3)})):
        for source, per_seed in sources.items():
            seeded(run, f"heads-from-{source}", per_seed, PREFIX, edited_parameters=24)
    for k, heads, per_seed, val in (("1", 1, (2, 2), 0.2), ("0.5", 6, (8, 8), 0.8)):  # val picks K=6 over the main 0.55
        seeded("mq", f"k{k}", per_seed, PREFIX, top_k=heads, edited_parameters=8 * heads)
        for seed in SEEDS:
            val_point(runs / "mq" / f"k{k}-s{seed}", {"exact_match": val})
    for size, lofit, lora in ((2, (1, 1), (5, 5)), (4, (4, 4), (4, 4))):
        seeded("mq", f"n{size}-lofit", lofit, PREFIX)
        seeded("mq", f"n{size}-lora", lora, PREFIX)


@pytest.fixture
def compare_report(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "pipelines"))
    import compare_report

    return compare_report


@pytest.fixture
def repo(tmp_path, monkeypatch, compare_report):
    monkeypatch.chdir(tmp_path)
    build_tree(tmp_path)
    build_compare()
    monkeypatch.setattr(compare_report.Study, "train_examples", lambda self, run: 6)  # the fake runs have no raw data
    return tmp_path


@pytest.fixture
def report(repo, compare_report):
    compare_report.main()
    return (repo / "reports/comparison.md").read_text(), json.loads((repo / "reports/comparison.json").read_text())


def test_prefix_metrics(tmp_path, compare_report):
    build_tree(tmp_path)
    for name, task in (("tqa0", "truthfulqa"), ("mq", "mquake")):
        folder = tmp_path / "runs" / name / "eval" / "base"
        summary = json.loads((folder / "summary.json").read_text())
        assert compare_report.prefix_metrics(folder / "predictions.jsonl", task, None) == pytest.approx(summary)
    assert compare_report.prefix_metrics(tmp_path / "runs/mq/eval/lofit/predictions.jsonl", "mquake", 10) == \
        {"exact_match": 0.5, "num_examples": 10}


def test_every_cell_has_an_interval_and_every_claim_its_test(report):
    text, _ = report
    cells = re.findall(r"\d+\.\d ± (?:—|\d+\.\d) \(n=\d\)( \[\d+\.\d, \d+\.\d\])?", text)
    assert cells and all(cells), "a table cell without its 95 % interval"
    claims = [line for line in text.splitlines() if re.match(r"\S.* on .*: (not significant, )?\d", line)]
    assert claims
    for line in claims:
        p = float(re.search(r"p = ([0-9.e-]+)\)", line).group(1))
        assert (p < 0.05) == (" beats " in line), line
        assert (p >= 0.05) == ("not significant" in line), line
    assert len(claims) == text.count(" p = ")  # no comparison sentence outside the claim rule

def test_tables_on_full_test_sets_with_claims_both_ways(report):
    text, data = report
    assert f"the first {FULL} test examples" not in text
    assert f"on all test examples ({FULL}/{FULL} for tqa0, tqa1)" in text
    assert "LoFiT beats ITI on tqa0 MC1: 70.0 vs 20.0" in text
    assert "ITI beats LoFiT on tqa1 MC1: 90.0 vs 40.0" in text  # LoFiT loses: said plainly
    assert "RepE vs LoFiT on tqa0 MC1: not significant, 70.0 vs 70.0" in text
    assert "LoFiT beats LoRA on mq EM: 60.0 vs 20.0" in text
    assert "ReFT beats LoFiT on cl EM: 80.0 vs 30.0" in text
    assert "RED vs LoFiT on mq EM: not significant" in text
    assert data["truthfulqa"]["tqa0"]["lofit"]["mc1"]["examples"] == FULL
    assert data["truthfulqa"]["tqa0"]["lofit"]["mc1"]["n"] == 2
    low, high = data["peft"]["cl"]["reft"]["exact_match"]["ci"]
    assert low < 0.8 < high
    assert "seeds [42, 43]" in text


def test_summary_lists_losses_wins_and_ties_against_other_methods(report, compare_report):
    text, _ = report
    summary = text[text.index("## Summary"):text.index("## TruthfulQA")]
    wins, losses, ties = (line for line in summary.splitlines() if line.startswith("- **"))
    assert wins.startswith("- **LoFiT beats** (") and "ITI on tqa0 MC1 (70.0 vs 20.0)" in wins and "LoRA on mq EM (60.0 vs 20.0)" in wins
    assert losses.startswith("- **LoFiT loses to** (") and "ITI on tqa1 MC1 (90.0 vs 40.0)" in losses
    assert "ReFT on cl EM (80.0 vs 30.0)" in losses
    assert "RepE on tqa0 MC1 (70.0 vs 70.0)" in ties and "RED on mq EM" in ties
    assert "base" not in summary.split("left out")[1]
    counts = [int(re.search(r"\((\d+)\): ", line).group(1)) for line in (wins, losses, ties)]
    claims = [line for line in text.splitlines() if re.match(r"\S.* on .*: (not significant, )?\d", line)]
    about_others = [line for line in claims if re.match(r"^(LoFiT (beats|vs) (?!base)|(?!base ).+ (beats|vs) LoFiT on)", line)]
    assert sum(counts) == len(about_others)


def test_summary_reads_the_claim_sentences_it_is_given(compare_report, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "pipelines"))
    from comparison.protocol import Cell, claim

    def cell(hits: int) -> Cell:
        outcomes = tuple(float(i < hits) for i in range(100))
        return Cell(mean=hits / 100, sd=None, n=1, low=0.0, high=1.0, outcomes=outcomes, binary=True)

    lines = [claim("LoRA", cell(60), "LoFiT", cell(20), "mq EM"), claim("RED", cell(21), "LoFiT", cell(20), "mq EM"),
             claim("LoFiT", cell(50), "base", cell(0), "mq EM"), claim("ITI", cell(10), "LoFiT", cell(40), "tqa MC1")]
    text = "\n".join(compare_report.summary(lines))
    assert "- **LoFiT beats** (1): ITI on tqa MC1 (40.0 vs 10.0)" in text
    assert "- **LoFiT loses to** (1): LoRA on mq EM (60.0 vs 20.0)" in text
    assert "- **no significant difference from** (1): RED on mq EM (21.0 vs 20.0)" in text
    assert compare_report.summary([lines[2]]) == []


def test_lr_grids_print_val_scores_and_choice(report):
    text, _ = report
    assert "Validation lr grid of LoFiT on tqa0 (✓ = chosen; val in %):" in text
    assert "|  | 0.01 | 45.0 | 50.0 |\n| ✓ | 0.03 | 55.0 | 60.0 |" in text
    assert "Validation lr grid of ReFT on cl (✓ = chosen; val in %):" in text
    assert "| ✓ | 0.001 | 50.0 |\n|  | 0.003 | 25.0 |" in text
    assert "lr=0.03" in text  # LoFiT's choice in Table 1's choice column


def test_table3_has_reft_with_parameters_and_share_of_the_model(report):
    text, data = report
    # the row lists trainable parameters and their share of the 105-parameter model
    assert re.search(r"\| ReFT \| 40 \| 38\.1 % \| .*\*\*80\.0 ± 0\.0 \(n=2\) \[", text)
    assert "| LoRA | 21 | 20 % |" in text
    assert data["peft"]["mq"]["reft"]["trainable_parameters"] == 40
    assert data["peft"]["cl"]["reft"]["exact_match"]["mean"] == 0.8


def test_ablations_compare_with_lofit_at_its_chosen_lr_on_one_prefix(report):
    text, data = report
    # LoFiT heads = the Table rows on the prefix (70 %), not the main run (50 %)
    assert data["head_source"]["tqa0"]["lofit_heads"]["mc1"]["mean"] == 0.7
    assert data["head_source"]["tqa0"]["lofit_heads"]["mc1"]["examples"] == PREFIX
    assert "LoFiT heads beats random heads on tqa0 MC1: 70.0 vs 20.0" in text
    assert "mq's own heads beats heads from cl on mq EM: 60.0 vs 10.0" in text
    # K sweep: K chosen on val (K=6, val 80 %), the main K is LoFiT's Table row
    assert data["k_sweep"]["mq"]["k0.5"]["chosen_on_val"] is True
    assert data["k_sweep"]["mq"]["main"]["exact_match"]["mean"] == 0.6
    assert re.search(r"\| ✓ \| top_k=0\.5 \| 6 \| 80\.0 \| \*\*80\.0", text)
    # data efficiency: the full point is the Table rows read on the same prefix
    full_point = data["data_efficiency"]["mq"]["lofit"]["n6"]["exact_match"]
    assert (full_point["mean"], full_point["examples"]) == (0.6, PREFIX)
    assert data["data_efficiency"]["mq"]["lora"]["n6"]["exact_match"]["mean"] == 0.2
    assert "LoRA beats LoFiT on mq EM with 2 examples: 50.0 vs 10.0" in text
    assert "LoFiT beats LoRA on mq EM with 6 examples: 60.0 vs 20.0" in text
    assert "full = the Table 1/3 rows (lr chosen on val) read on the same prefix" in text
    assert f"the first {PREFIX} test examples" in text


def test_captions_say_what_the_cpu_plan_leaves_out(report):
    text, _ = report
    assert "This is the CPU plan: the GPU plan (`compare.plan: *gpu_plan`) runs seeds [42, 43, 44]" in text
    assert "The CPU plan leaves out the K sweep on cl (GPU plan only)." in text
    assert "✓ = chosen. The CPU plan leaves out top_k 0.25 (GPU plan only)." in text
    assert "The CPU plan leaves out n = 3 (GPU plan only)." in text


def test_frontier_has_a_point_per_method_and_k(report, repo):
    text, data = report
    assert set(data["frontier"]["mq"]) == {"LoFiT", "LoRA", "RED", "ReFT", "LoFiT K=1", "LoFiT K=6",
                                           "LoFiT, K and lr chosen on val (K=6)"}
    assert data["frontier"]["mq"]["LoFiT, K and lr chosen on val (K=6)"] == data["frontier"]["mq"]["LoFiT K=6"]
    assert data["frontier"]["mq"]["ReFT"]["parameters"] == 40
    assert set(data["frontier"]["tqa0"]) == {"LoFiT", "ITI", "RepE"}
    assert all(len(point[metric]["ci"]) == 2 for run in data["frontier"].values()
               for point in run.values() for metric in point if metric != "parameters")
    for run in RUNS:
        assert f"![frontier of {run}](comparison/frontier-{run}.png)" in text
        assert (repo / "reports/comparison" / f"frontier-{run}.png").stat().st_size > 0
    for name in ("head_swap", "k_sweep", "data_efficiency", "head_layers"):
        assert (repo / "reports/comparison" / f"{name}.png").stat().st_size > 0


def test_frontier_plot_is_written_and_stale_ones_dropped(tmp_path, monkeypatch, compare_report):
    from comparison import plots

    monkeypatch.setattr(plots, "PLOTS", tmp_path)
    point = {"mean": 0.5, "low": 0.4, "high": 0.6}
    name = plots.frontier("mq", "EM", {"LoFiT": (24, point), "LoRA": (21, point), "LoFiT K=6": (48, point)}, point)
    assert name == "frontier-mq.png"
    assert (tmp_path / name).stat().st_size > 0
    plots.drop_optional()  # a run no longer configured leaves no frontier behind
    assert not (tmp_path / name).exists()


@pytest.mark.parametrize("profile,expected", [({}, 134), ({"train_limit": 10}, 10)])
def test_full_data_point_is_the_main_runs_training_set(profile, expected, tmp_path, monkeypatch, compare_report, shared_data):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "raw").symlink_to(shared_data)
    plan = {"seeds": [42], "ablation_seeds": [42]}
    params = {
        "profile": "p", "profiles": {"p": profile}, "seed": 42, "model": {"device": "cpu"},
        "runs": {"mq": {"task": "mquake", "options": {}}},
        "compare": {"eval_limit": {"cpu": None}, "plans": {"cpu": plan}, "plan": plan},
    }
    assert compare_report.Study(params).train_examples("mq") == expected


def report_without(repo: Path, compare_report, section: str, key: str) -> str:
    """comparison.md after emptying `key` of the CPU plan's `section` (the GPU plan keeps it)."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["compare"]["plans"]["cpu"][section][key] = []
    params["compare"]["plan"] = params["compare"]["plans"]["cpu"]
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    compare_report.main()
    return (repo / "reports/comparison.md").read_text()


def test_a_plan_without_ood_baselines_says_where_the_ood_rows_are(repo, compare_report):
    text = report_without(repo, compare_report, "ood", "methods")
    assert ("Not configured (compare.plan.ood.methods is empty). The CPU plan leaves out the OOD rows of iti "
            "(GPU plan only). Base and LoFiT out of domain: reports/results.md.") in text
    assert "ood" not in json.loads((repo / "reports/comparison.json").read_text())


def test_unconfigured_section_has_no_plot(repo, compare_report):
    text = report_without(repo, compare_report, "data_efficiency", "runs")
    assert "Not configured (compare.plan.data_efficiency.runs is empty). The CPU plan leaves out data efficiency on mq" in text
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
    evaluation(repo / "compare/runs/tqa1/iti", "truthfulqa", 9, PREFIX)
    with pytest.raises(SystemExit, match=rf"compare/runs/tqa1/iti/summary\.json scored {PREFIX} examples, the main rows {FULL}"):
        compare_report.main()

"""`dvc repro` end to end on a tiny model and a few examples per task (params profile `test`).

Runs the real pipeline in a copy of the repository, checks the metrics files and the results
table, then changes one step-2 parameter of one run and checks that only the stages that depend
on it rerun. Last, the opt-in comparison pipeline (compare/dvc.yaml) runs on a tiny plan. The copy
holds the opt-in recommend/dvc.yaml too, which DVC parses with every `dvc repro` (never run here: it
needs the licensed MovieLens data).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RUNS = ("truthfulqa_fold0", "truthfulqa_fold1", "mquake", "clutrr", "arithmetic")  # arithmetic: the files task


def dvc(repo: Path, *args: str, stderr: bool = True) -> str:
    # stage commands call `python`: it must be this environment's, as after `. .venv/bin/activate`
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONUNBUFFERED": "1", "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env.pop("OPENAI_API_KEY", None)  # the judge stages must record "not judged" and go on
    result = subprocess.run([str(bin_dir / "dvc"), *args], cwd=repo, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout + (result.stderr if stderr else "")


def ran_stages(output: str) -> set[str]:
    """Stage names DVC ran (without the `compare/dvc.yaml:` prefix of the second pipeline's stages)."""
    return set(re.findall(r"Running stage '(?:[^':]+:)?([^']+)'", output))


@pytest.fixture(scope="module")
def pipeline_repo(tmp_path_factory, shared_data, tokenizer):
    from conftest import tiny_model

    base = tmp_path_factory.mktemp("pipeline")
    model_dir = base / "tiny-model"
    tiny_model("llama", len(tokenizer), seed=0).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    repo = base / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, repo / name)
    for folder in ("pipelines", "lofit", "compare", "recommend", "data/examples"):
        shutil.copytree(ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["profile"] = "test"
    params["model"]["source"] = str(model_dir)
    params["data"]["mirror"] = str(shared_data)
    for run in params["runs"].values():
        run["tune"]["top_k"] = 2  # the tiny model has 8 heads
    params["ood"]["limit"]["cpu"] = 3
    params["open_ended"]["limit"]["cpu"] = 2
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc(repo, "init", "--no-scm", "-q")
    first = dvc(repo, "repro")
    return repo, first


def test_repro_runs_every_stage_and_writes_metrics(pipeline_repo):
    repo, output = pipeline_repo
    stages = ran_stages(output)
    for run in RUNS:
        for stage in ("select_heads", "tune_biases", "evaluate_base", "evaluate_lofit"):
            assert f"{stage}@{run}" in stages
    assert {"prepare_model", "prepare_data", "report"} <= stages
    for task in ("triviaqa", "nq_open", "mmlu"):
        assert {f"ood_base@{task}", f"ood_lofit@{task}"} <= stages
    for run in ("truthfulqa_fold0", "truthfulqa_fold1"):
        assert {f"generate_open_base@{run}", f"generate_open_lofit@{run}"} <= stages
        assert {f"judge_open@{run}-base", f"judge_open@{run}-lofit"} <= stages
    for run in RUNS:
        heads = json.loads((repo / "runs" / run / "select" / "heads.json").read_text())
        assert heads and (repo / "runs" / run / "select" / "heads.png").is_file()
        assert (repo / "runs" / run / "tune" / "adapter" / "adapter.safetensors").is_file()
        tune = json.loads((repo / "runs" / run / "tune" / "metrics.json").read_text())
        assert tune["trainable_parameters"] == 2 * 8
        for method in ("base", "lofit"):
            summary = json.loads((repo / "runs" / run / "eval" / method / "summary.json").read_text())
            assert summary["num_examples"] == 3
    # stderr warns that reports/comparison.json (the opt-in comparison) does not exist yet
    shown = json.loads(dvc(repo, "metrics", "show", "--json", stderr=False))
    files = next(iter(shown.values()))["data"]
    assert "runs/mquake/eval/lofit/summary.json" in files
    assert "reports/metrics.json" in files


def test_results_table_has_every_task_and_method(pipeline_repo):
    repo, _ = pipeline_repo
    table = (repo / "reports" / "results.md").read_text()
    for task, metric in (("truthfulqa", "mc1"), ("truthfulqa", "mc2"), ("mquake", "exact_match"), ("clutrr", "exact_match")):
        for method in ("base", "lofit"):
            assert re.search(rf"\| {task} \| {method} \| \d+ \| \d+ \| {metric} \| [\d.]+ \| \d+ \|", table), (task, method, metric)
    metrics = json.loads((repo / "reports" / "metrics.json").read_text())
    assert "truthfulqa.lofit.mc1" in metrics
    assert list((repo / "reports" / "curves").glob("*.png"))
    for task in ("triviaqa", "nq_open", "mmlu"):
        number = r"[+-]?[\d.]+"
        row = rf"\| {task} \| (exact_match|accuracy) \| {number} \| {number} \| {number} \| \[{number}, {number}\] \| [\d.e-]+ \| 3 \|"
        assert re.search(row, table), task
    assert "Not judged:" in table  # no OPENAI_API_KEY in tests: recorded, pipeline continues


def test_open_ended_answers_and_judge_summary(pipeline_repo):
    repo, _ = pipeline_repo
    folder = repo / "runs" / "truthfulqa_fold1" / "open_ended" / "lofit"
    answers = [json.loads(line) for line in (folder / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == 2 and all(a["model"] == "lofit" for a in answers)
    summary = json.loads((folder / "judge" / "judge_summary.json").read_text())
    assert summary["judged"] is False


def test_changing_one_param_reruns_only_its_dependents(pipeline_repo):
    repo, _ = pipeline_repo
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["runs"]["mquake"]["tune"]["lr"] = 0.02
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    output = dvc(repo, "repro")
    assert ran_stages(output) == {"tune_biases@mquake", "evaluate_lofit@mquake", "report"}
    assert ran_stages(dvc(repo, "repro")) == set()


TINY_PLAN = {
    "seeds": [42, 7],  # Tables 1 and 3: the main seed (its grid point, scored) and one retrained seed
    "ablation_seeds": [42],
    "lr_grid": {"lofit": [1.0e-2, 3.0e-2], "lora": [3.0e-4, 1.0e-3], "red": [1.0e-2, 3.0e-2], "reft": [1.0e-3, 3.0e-3]},
    "lofit": {"runs": ["truthfulqa_fold0", "mquake"]},
    "iti": {"runs": ["truthfulqa_fold0"], "top_k": [2, 3], "alpha": [1.0, 5.0]},
    "repe": {"runs": ["truthfulqa_fold0"], "top_layers": [1], "alpha": [1.0, 2.0]},
    "peft": {"runs": ["mquake"], "methods": ["lora", "red", "reft"]},
    "random_heads": {"runs": ["mquake"]},
    "iti_heads": {"runs": ["truthfulqa_fold0"]},
    "head_swap": {"runs": ["truthfulqa_fold0", "mquake"]},
    "k_sweep": {"runs": ["mquake"], "top_k": [1, 0.5]},
    "data_efficiency": {"runs": ["mquake"], "train_size": [2], "methods": ["lofit", "lora"]},
    "ood": {"methods": ["iti"]},
}
TINY_COMPARE = {
    "eval_limit": {"cpu": 2, "cuda": None},  # the ablations' prefix; Tables 1 and 3: the profile's 3 examples
    "methods": {
        "lora": {"r": 2, "lora_alpha": 4.0, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
        "red": {},
        "reft": {"rank": 2, "first": 1, "last": 1, "layers": None, "tied": False, "init": "random"},
    },
    # both kinds share the tiny plan; `plan` must equal the plan of model.device (cpu here)
    "plans": {"gpu": TINY_PLAN, "cpu": TINY_PLAN},
    "plan": TINY_PLAN,
}
TRAINED = {"lofit": ("truthfulqa_fold0", "mquake"), "lora": ("mquake",), "red": ("mquake",), "reft": ("mquake",)}


def compare_folder(repo: Path, run: str, label: str, examples: int) -> dict:
    """The info.json of compare/runs/RUN/LABEL, after checking its summary scored `examples` test rows."""
    folder = repo / "compare" / "runs" / run / label
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["num_examples"] == examples, folder
    assert len((folder / "predictions.jsonl").read_text().splitlines()) == examples, folder
    return json.loads((folder / "info.json").read_text())


def test_comparison_pipeline_runs_every_baseline_and_ablation(pipeline_repo):
    repo, _ = pipeline_repo
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["compare"] = TINY_COMPARE
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert ran_stages(dvc(repo, "repro")) == set(), "the main pipeline must not depend on the comparison"
    stages = ran_stages(dvc(repo, "repro", "compare/dvc.yaml"))
    grid = TINY_PLAN["lr_grid"]
    assert {f"grid_{m}@{run}-{lr}" for m, runs in TRAINED.items() for run in runs for lr in grid[m]} <= stages
    assert {f"lofit@{run}-{s}" for run in TRAINED["lofit"] for s in (42, 7)} <= stages
    assert {f"peft@mquake-{m}-{s}" for m in ("lora", "red", "reft") for s in (42, 7)} <= stages
    assert {"iti@truthfulqa_fold0", "repe@truthfulqa_fold0", "random_heads@mquake-42", "iti_heads@truthfulqa_fold0-42",
            "k_sweep@mquake-1-42", "k_sweep@mquake-0.5-42", "data_efficiency@mquake-2-lofit-42",
            "data_efficiency@mquake-2-lora-42", "compare_report"} <= stages
    assert {f"head_swap@{run}-{source}-42" for run in ("truthfulqa_fold0", "mquake")
            for source in ("truthfulqa_fold0", "mquake")} <= stages
    assert {f"ood@iti-{task}" for task in ("triviaqa", "nq_open", "mmlu")} <= stages

    # every trained method's lr is a grid value chosen on val, and every seed trains at it
    for method, runs in TRAINED.items():
        for run in runs:
            label = f"{method}-s{{seed}}"
            chosen = {compare_folder(repo, run, label.format(seed=s), 3)["choice"]["lr"] for s in (42, 7)}
            assert len(chosen) == 1 and chosen <= set(grid[method]), (method, run, chosen)
            for lr in grid[method]:
                val = json.loads((repo / "compare" / "runs" / run / f"grid-{method}" / f"lr{lr}" / "val.json").read_text())
                assert val["split"] == "val" and val["num_examples"] == 2, (method, run, lr)
    main_point = repo / "compare" / "runs" / "truthfulqa_fold0" / "grid-lofit" / "lr0.01" / "info.json"
    assert json.loads(main_point.read_text())["reused_main_run"] is True  # the main run's lr and seed: scored, not retrained
    retrained = compare_folder(repo, "truthfulqa_fold0", "lofit-s7", 3)
    assert retrained["experiment"] == "table" and retrained["reused_main_run"] is False
    lora = compare_folder(repo, "mquake", "lora-s7", 3)
    assert lora["method"] == "lora" and lora["seed"] == 7 and lora["edited_parameters"] > 0
    assert (repo / "compare" / "runs" / "mquake" / "lora-s7" / "train" / "lora" / "adapter_config.json").is_file()
    assert compare_folder(repo, "mquake", "reft-s7", 3)["edited_parameters"] > 0

    iti = compare_folder(repo, "truthfulqa_fold0", "iti", 3)
    search = json.loads((repo / "compare" / "runs" / "truthfulqa_fold0" / "iti" / "search.json").read_text())
    assert len(search["grid"]) == 4 and iti["choice"]["alpha"] == search["chosen"]["alpha"]
    assert iti["edited_parameters"] == iti["top_k"] * 8  # head_dim of the tiny model
    assert compare_folder(repo, "truthfulqa_fold0", "repe", 3)["choice"]["alpha"] in (1.0, 2.0)
    lofit_lr = compare_folder(repo, "mquake", "lofit-s42", 3)["choice"]["lr"]
    random_heads = compare_folder(repo, "mquake", "heads-random-s42", 2)
    assert random_heads["heads_source"] == "random" and random_heads["choice"]["lr"] == lofit_lr
    assert compare_folder(repo, "truthfulqa_fold0", "heads-iti-s42", 2)["heads_source"] == "iti"
    assert compare_folder(repo, "truthfulqa_fold0", "heads-from-mquake-s42", 2)["heads_source"] == "mquake"
    assert compare_folder(repo, "mquake", "heads-from-truthfulqa_fold0-s42", 2)["reused_main_run"] is False
    assert compare_folder(repo, "mquake", "k0.5-s42", 2)["top_k"] == 4  # half of the tiny model's 8 heads
    assert json.loads((repo / "compare" / "runs" / "mquake" / "k1-s42" / "val.json").read_text())["split"] == "val"
    efficiency = compare_folder(repo, "mquake", "n2-lofit-s42", 2)
    assert efficiency["train_size"] == 2 and efficiency["experiment"] == "data_efficiency"
    assert (repo / "compare" / "runs" / "mquake" / "n2-lofit-s42" / "select" / "heads.json").is_file()
    for task in ("triviaqa", "nq_open", "mmlu"):
        assert (repo / "compare" / "runs" / "ood" / "iti" / task / "summary.json").is_file()

    report = (repo / "reports" / "comparison.md").read_text()
    for row in ("ITI", "RepE", "LoRA", "RED", "ReFT"):
        assert re.search(rf"^\| {row} \|", report, re.MULTILINE), row
    cell = r"[\d.]+ ± (?:[\d.]+|—) \(n=\d\) \[[\d.]+, [\d.]+\]"
    assert re.search(rf"\| LoRA \| \**{cell}", report), "Table 3 cells carry the seeds' n and a 95 % interval"
    assert "Validation lr grid of ReFT on mquake" in report
    comparison = json.loads((repo / "reports" / "comparison.json").read_text())
    assert {"truthfulqa", "peft", "ood", "head_source", "head_swap", "k_sweep", "data_efficiency", "frontier"} <= set(comparison)
    assert set(comparison["frontier"]) == {"truthfulqa_fold0", "mquake"}
    assert any(label.startswith("LoFiT, K and lr chosen on val") for label in comparison["frontier"]["mquake"])
    plots = {path.name for path in (repo / "reports" / "comparison").glob("*.png")}
    assert {"head_swap.png", "k_sweep.png", "data_efficiency.png", "head_layers.png",
            "frontier-truthfulqa_fold0.png", "frontier-mquake.png"} <= plots
    assert ran_stages(dvc(repo, "repro", "compare/dvc.yaml")) == set()


def test_trimming_the_comparison_plan_reruns_only_the_report(pipeline_repo):
    """Each stage lists only the plan entries it reads: dropping a seed, a sweep point or a method
    from a plan removes those stages and leaves every finished one valid."""
    repo, _ = pipeline_repo
    params = yaml.safe_load((repo / "params.yaml").read_text())
    plan = params["compare"]["plan"]  # the same object as plans.cpu and plans.gpu (one anchor)
    assert plan is params["compare"]["plans"]["cpu"]
    plan["seeds"] = [42]
    plan["k_sweep"]["top_k"] = [1]
    plan["data_efficiency"]["methods"] = ["lofit"]
    plan["iti_heads"]["runs"] = []
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert ran_stages(dvc(repo, "repro", "compare/dvc.yaml")) == {"compare_report"}
    report = (repo / "reports" / "comparison.md").read_text()
    assert "(n=2)" not in report, "the dropped seed's folders must not be read"


@pytest.mark.parametrize("run,task", [("truthfulqa_fold0", "truthfulqa"), ("mquake", "mquake"), ("clutrr", "clutrr")])
def test_prefix_rescoring_of_all_rows_equals_the_evaluators_summary(pipeline_repo, run, task, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "pipelines"))
    from compare_report import prefix_metrics

    folder = pipeline_repo[0] / "runs" / run / "eval" / "lofit"
    summary = json.loads((folder / "summary.json").read_text())
    assert prefix_metrics(folder / "predictions.jsonl", task, None) == pytest.approx(summary, rel=1e-9)

"""`dvc repro` end to end on a tiny model and a few examples per task (params profile `test`).

Runs the real pipeline in a copy of the repository, checks the metrics files and the results
table, then changes one step-2 parameter of one run and checks that only the stages that depend
on it rerun.
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
RUNS = ("truthfulqa_fold0", "truthfulqa_fold1", "mquake", "clutrr")


def dvc(repo: Path, *args: str) -> str:
    # stage commands call `python`: it must be this environment's, as after `. .venv/bin/activate`
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONUNBUFFERED": "1", "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env.pop("OPENAI_API_KEY", None)  # the judge stages must record "not judged" and go on
    result = subprocess.run([str(bin_dir / "dvc"), *args], cwd=repo, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout + result.stderr


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


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
    for folder in ("pipelines", "lofit"):
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
    shown = json.loads(dvc(repo, "metrics", "show", "--json"))
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
        assert re.search(rf"\| {task} \| lofit \| (exact_match|accuracy) \| [\d.]+ \| 3 \|", table), task
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

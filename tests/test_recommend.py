"""The recommendation study (recommend/dvc.yaml): AUC intervals and paired tests, plan selection,
the report on synthetic predictions, and the pipeline's stage names."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "pipelines"))  # the stage scripts import their helpers as top-level modules

import recommend_common  # noqa: E402
import recommend_report  # noqa: E402
import recommend_stats  # noqa: E402


@pytest.fixture
def pipelines():
    return recommend_stats, recommend_common, recommend_report


# ---------------------------------------------------------------------------------------------- AUC


def test_perfect_separation_has_the_interval_one_one(pipelines):
    stats = pipelines[0]
    labels = [True] * 6 + [False] * 5
    scores = [0.9, 0.8, 0.95, 0.7, 0.6, 0.99, 0.1, 0.2, 0.3, 0.05, 0.5]
    cell = stats.auc_cell([scores], labels, resamples=200)
    assert (cell.mean, cell.low, cell.high) == (1.0, 1.0, 1.0)


def test_auc_of_a_hand_computed_case(pipelines):
    stats = pipelines[0]
    # positives 0.8, 0.4; negatives 0.6, 0.4, 0.2: pairs won 1 + 1 + 1 and 0 + 0.5 (tie) + 1 → 4.5 / 6
    assert stats.auc([0.8, 0.4, 0.6, 0.4, 0.2], [True, True, False, False, False]) == pytest.approx(0.75)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.1, 0.3, 0.5, 0.7, 0.9]), st.booleans()), min_size=2, max_size=40)
       .filter(lambda rows: len({label for _, label in rows}) == 2))
def test_auc_equals_torchmetrics(rows):
    from lofit.evaluation.yes_no import binary_auc

    scores, labels = [s for s, _ in rows], [y for _, y in rows]
    assert recommend_stats.auc(scores, labels) == pytest.approx(binary_auc(scores, labels), abs=1e-6)


def test_interval_is_a_bootstrap_of_the_seed_averaged_auc(pipelines):
    stats = pipelines[0]
    rng = np.random.default_rng(1)
    labels = rng.random(300) < 0.5
    seeds = [(labels * 0.4 + rng.random(300)).tolist() for _ in range(3)]
    cell = stats.auc_cell(seeds, labels.tolist(), resamples=300)
    per_seed = [stats.auc(s, labels.tolist()) for s in seeds]
    assert cell.mean == pytest.approx(np.mean(per_seed)) and cell.sd == pytest.approx(np.std(per_seed, ddof=1))
    assert cell.low < cell.mean < cell.high and cell.high - cell.low < 0.2
    assert cell.n == 3 and cell.examples == 300


def test_paired_test_finds_a_real_gap_and_not_a_null_one(pipelines):
    stats = pipelines[0]
    rng = np.random.default_rng(2)
    labels = (rng.random(400) < 0.5).tolist()
    noise = rng.random(400)
    strong = stats.auc_cell([(np.array(labels) * 1.0 + noise).tolist()], labels, resamples=500)
    weak = stats.auc_cell([(np.array(labels) * 0.1 + noise).tolist()], labels, resamples=500)
    same = stats.auc_cell([(np.array(labels) * 0.1 + noise).tolist()], labels, resamples=500)
    assert stats.paired_auc_p(strong, weak) < 0.01
    assert stats.paired_auc_p(weak, same) == 1.0


# --------------------------------------------------------------------------------------------- plans


def params_with(device: str, plan: str) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["model"]["device"] = device
    params["recommend"]["plan"] = params["recommend"]["plans"][plan]
    return params


def test_plan_follows_the_device_and_refuses_a_mismatch(pipelines):
    common = pipelines[1]
    assert common.active_plan(params_with("cpu", "cpu"))["seeds"] == [42]
    assert len(common.active_plan(params_with("cuda", "gpu"))["seeds"]) == 3
    with pytest.raises(SystemExit, match=r"recommend.plan is not recommend.plans.gpu.*\*rec_gpu_plan"):
        common.active_plan(params_with("cuda:0", "cpu"))


def test_committed_plans_are_the_studys(pipelines):
    plans = yaml.safe_load((ROOT / "params.yaml").read_text())["recommend"]["plans"]
    assert sorted(plans["gpu"]["train_sizes"]) == [16, 64, 256]  # TALLRec's sizes; the CPU plan runs a subset
    for plan in plans.values():
        assert set(plan["train_sizes"]) <= {16, 64, 256} and 16 in plan["train_sizes"]
        assert len(plan["lr_grid"]["lofit"]) == len(plan["lr_grid"]["lora"]) >= 3
    assert plans["gpu"]["grid_sizes"] == plans["gpu"]["train_sizes"] and plans["gpu"]["test_limit"] is None


def test_a_size_without_a_grid_takes_the_nearest_grid_size_on_a_log_scale(pipelines):
    common = pipelines[1]
    assert [common.grid_size_for({"grid_sizes": [64]}, n) for n in (16, 64, 256)] == [64, 64, 64]
    assert [common.grid_size_for({"grid_sizes": [16, 256]}, n) for n in (16, 32, 64, 100, 256)] == [16, 16, 16, 256, 256]


# -------------------------------------------------------------------------------------------- report


def write_run(folder: Path, labels: list[bool], scores: list[float], info: dict) -> None:
    folder.mkdir(parents=True)
    rows = [{"user": i, "item": 100 + i, "label": "Yes." if y else "No.", "p_yes": s} for i, (y, s) in enumerate(zip(labels, scores))]
    (folder / "predictions.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (folder / "info.json").write_text(json.dumps(info))


def synthetic_study(root: Path, common, plan: dict) -> object:
    """Runs of base, LoFiT (strong, improving with n) and LoRA (weak) as the train stages leave them."""
    rng = np.random.default_rng(3)
    labels = (rng.random(200) < 0.5).tolist()
    y = np.array(labels, dtype=float)
    write_run(root / "base", labels, rng.random(200).tolist(), {"trainable_parameters": 0, "choice": None})
    for method, gain, parameters in (("lofit", 1.0, 1728), ("lora", 0.0, 460800)):
        for size in plan["train_sizes"]:
            for seed in plan["seeds"]:  # LoFiT: no signal at n = 16, a strong one at n = 256; LoRA: none
                scores = (y * gain * (np.log2(size) - 4) / 4 + rng.random(200)).tolist()
                choice = {"lr": 0.01, "grid_size": 64, "grid": [{"value": 0.01, "auc": 0.7}, {"value": 0.03, "auc": 0.6}]}
                write_run(root / method / f"n{size}-s{seed}", labels, scores,
                          {"trainable_parameters": parameters, "choice": choice})
    params = params_with("cpu", "cpu")
    params["recommend"]["plans"]["cpu"] = params["recommend"]["plan"] = plan
    return common.Study(params)


def test_report_has_an_interval_in_every_cell_and_claims_only_when_significant(tmp_path, pipelines):
    _, common, report = pipelines
    plan = {"train_sizes": [16, 64, 256], "grid_sizes": [64], "seeds": [42, 43], "lr_grid": {"lofit": [0.01], "lora": [0.01]},
            "val_limit": 500, "test_limit": 1000}
    results = report.build(synthetic_study(tmp_path / "runs", common, plan), tmp_path / "runs", resamples=300)
    out = tmp_path / "reports"
    report.write(results, out / "recommendation.md", out / "recommendation.json", out / "recommendation" / "auc.png")
    metrics = json.loads((out / "recommendation.json").read_text())
    for method in ("lofit", "lora"):
        for size in ("16", "64", "256"):
            cell = metrics["methods"][method]["sizes"][size]
            assert cell["ci"][0] <= cell["mean"] <= cell["ci"][1] and cell["n"] == 2 and "sd" in cell
    assert metrics["methods"]["lofit"]["trainable_parameters"] == 1728
    claims = metrics["lofit_vs_lora"]
    assert claims["16"]["p"] >= 0.05 and "not significant" in claims["16"]["claim"]  # no signal at n = 16
    assert claims["256"]["p"] < 0.05 and claims["256"]["claim"].startswith("LoFiT beats LoRA at 256 samples")
    versus_base = metrics["versus_base"]
    assert versus_base["lofit"]["256"]["claim"].startswith("LoFiT beats base (zero-shot) at 256 samples")
    assert "not significant" in versus_base["lora"]["64"]["claim"] and versus_base["lora"]["64"]["p"] >= 0.05
    text = (out / "recommendation.md").read_text()
    assert text.count("(n=2) [") == 6 and text.count("(n=1) [") == 3  # 2 methods x 3 sizes, base in each column
    assert "first 1000 test samples" in text and "1,728" in text
    assert "## Against the zero-shot model" in text and "LoFiT beats base (zero-shot) at 256 samples" in text
    assert "Plan `cpu` of `recommend.plans`" in text and "the `gpu` plan runs sizes [16, 64, 256], seeds [42, 43, 44]" in text
    assert (out / "recommendation" / "auc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_refuses_runs_scored_on_other_samples(tmp_path, pipelines):
    _, common, report = pipelines
    plan = {"train_sizes": [16], "grid_sizes": [16], "seeds": [42], "lr_grid": {"lofit": [0.01], "lora": [0.01]},
            "val_limit": None, "test_limit": None}
    rec = synthetic_study(tmp_path / "runs", common, plan)
    rows = (tmp_path / "runs/lora/n16-s42/predictions.jsonl").read_text().splitlines()
    (tmp_path / "runs/lora/n16-s42/predictions.jsonl").write_text("\n".join(rows[1:]) + "\n")
    with pytest.raises(SystemExit, match="n16-s42: scored other test samples"):
        report.build(rec, tmp_path / "runs", resamples=50)


# ------------------------------------------------------------------------------------------ pipeline


def test_pipeline_stages_and_licence_flags():
    stages = yaml.safe_load((ROOT / "recommend" / "dvc.yaml").read_text())["stages"]
    assert set(stages) == {"prepare_movielens", "base", "grid_lofit", "grid_lora", "train", "recommend_report"}
    for name in ("prepare_movielens", "base", "grid_lofit", "grid_lora", "train"):
        (out,) = stages[name]["outs"]
        assert next(iter(out.values())) == {"push": False}, name  # MovieLens-derived files never reach a remote
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "/data/restricted/" in ignored and "/recommend/runs/" in ignored

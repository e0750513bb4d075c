"""pipelines/comparison/protocol.py and the plan selection of pipelines/compare_common.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def protocol(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "pipelines"))
    from comparison import protocol

    return protocol


def write_point(folder: Path, val: dict, test: dict) -> None:
    """A grid point as the grid stage leaves it, plus a test summary that must never be read."""
    folder.mkdir(parents=True)
    (folder / "val.json").write_text(json.dumps({**val, "split": "val"}))
    (folder / "summary.json").write_text(json.dumps({**test, "split": "test"}))


def test_lr_choice_reads_val_only(tmp_path, protocol):
    # test scores rank the grid the other way round: a chooser that read them would pick 1e-3
    write_point(tmp_path / "lr0.001", {"exact_match": 0.2}, {"exact_match": 0.9})
    write_point(tmp_path / "lr0.01", {"exact_match": 0.6}, {"exact_match": 0.1})
    write_point(tmp_path / "lr0.1", {"exact_match": 0.4}, {"exact_match": 0.5})
    chosen, rows = protocol.choose_lr(tmp_path, [1e-3, 1e-2, 1e-1], ["exact_match"])
    assert chosen == 1e-2
    assert rows == [{"value": 1e-3, "exact_match": 0.2}, {"value": 1e-2, "exact_match": 0.6},
                    {"value": 1e-1, "exact_match": 0.4}]


def test_lr_choice_breaks_ties_by_next_metric_then_grid_order(tmp_path, protocol):
    write_point(tmp_path / "lr0.1", {"mc1": 0.5, "mc2": 0.4}, {})
    write_point(tmp_path / "lr0.2", {"mc1": 0.5, "mc2": 0.6}, {})
    write_point(tmp_path / "lr0.3", {"mc1": 0.5, "mc2": 0.6}, {})
    assert protocol.choose_lr(tmp_path, [0.1, 0.2, 0.3], ["mc1", "mc2"])[0] == 0.2


def test_a_test_summary_in_place_of_val_is_refused(tmp_path, protocol):
    (tmp_path / "lr0.1").mkdir()
    (tmp_path / "lr0.1/val.json").write_text(json.dumps({"exact_match": 1.0, "split": "test"}))
    with pytest.raises(SystemExit, match=r"lr0\.1/val\.json: scored split 'test', not val"):
        protocol.choose_lr(tmp_path, [0.1], ["exact_match"])
    with pytest.raises(SystemExit, match=r"lr0\.2/val\.json: missing"):
        protocol.choose_lr(tmp_path, [0.2], ["exact_match"])


@given(st.floats(min_value=1e-7, max_value=10, allow_nan=False))
def test_lr_label_is_dvcs_rendering(lr):
    # DVC renders ${item.lr} with str(); the grid stage parses it back with float()
    import sys

    sys.path.insert(0, str(ROOT / "pipelines"))
    from comparison.protocol import lr_label

    assert lr_label(float(str(lr))) == f"lr{lr}"


def test_cell_interval_and_seeds(protocol):
    one = protocol.cell({42: [1, 0, 1, 1]})
    assert (one.mean, one.sd, one.n, one.binary) == (0.75, None, 1, True)
    assert one.low <= one.mean <= one.high
    assert "75.0 ± — (n=1) [" in one.text()
    two = protocol.cell({42: [1, 0, 1, 1], 43: [1, 0, 0, 1]})
    assert two.mean == pytest.approx(0.625) and two.n == 2 and not two.binary
    assert two.sd == pytest.approx(0.1767767)  # sample sd of 0.75 and 0.5
    assert two.outcomes == (1.0, 0.0, 0.5, 1.0)  # per example, averaged over seeds
    assert set(two.to_json()) == {"mean", "sd", "n", "ci", "examples"}
    with pytest.raises(ValueError, match="different numbers of examples"):
        protocol.cell({42: [1, 0], 43: [1]})


def test_claims_need_p_below_005(protocol):
    n = 60
    reference = protocol.cell({42: [0] * n})
    better = protocol.cell({42: [1] * 20 + [0] * (n - 20)})  # 20 discordant, all one way: McNemar p ~ 2e-6
    close = protocol.cell({42: [1] * 3 + [0] * (n - 3)})  # 3 discordant: McNemar p = 0.25
    assert protocol.paired_p(reference, close) == (pytest.approx(0.25), "McNemar")
    assert protocol.claim("LoRA", better, "LoFiT", reference, "mq EM").startswith("LoRA beats LoFiT on mq EM: 33.3 vs 0.0")
    assert protocol.claim("LoFiT", reference, "base", better, "mq EM").startswith("base beats LoFiT on mq EM: 33.3 vs 0.0")
    line = protocol.claim("RED", close, "LoFiT", reference, "mq EM")
    assert line.startswith("RED vs LoFiT on mq EM: not significant, 5.0 vs 0.0 (McNemar p = 0.25)")
    assert "beats" not in line


def test_continuous_or_seeded_cells_use_the_paired_bootstrap(protocol):
    a = protocol.cell({42: [0.5, 0.6, 0.7, 0.4]})
    b = protocol.cell({42: [0.5, 0.6, 0.7, 0.5]})
    p, test = protocol.paired_p(a, b)
    assert test == "paired bootstrap" and p > 0.05


@pytest.fixture
def compare_common(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "pipelines"))
    import compare_common

    return compare_common


def repo_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.mark.parametrize("device,kind", [("cpu", "cpu"), ("cuda", "gpu"), ("cuda:1", "gpu")])
def test_plan_follows_model_device(device, kind, compare_common):
    params = repo_params()
    params["model"]["device"] = device
    params["compare"]["plan"] = params["compare"]["plans"][kind]
    assert compare_common.active_plan(params) is params["compare"]["plans"][kind]


def test_the_expanded_plan_must_be_the_devices(compare_common):
    params = repo_params()
    assert compare_common.active_plan(params) == params["compare"]["plans"]["cpu"]  # the committed params: CPU
    params["model"]["device"] = "cuda"
    with pytest.raises(SystemExit, match=r"compare\.plan is not compare\.plans\.gpu.*set `plan: \*gpu_plan`"):
        compare_common.active_plan(params)


def test_committed_plans_follow_the_protocol():
    plans = repo_params()["compare"]["plans"]
    for name, plan in plans.items():
        sizes = {len(values) for values in plan["lr_grid"].values()}
        assert len(sizes) == 1, f"{name}: lr grids of different sizes"
        assert set(plan["lr_grid"]) == {"lofit", "lora", "red", "reft"}
        assert "reft" in plan["peft"]["methods"]
        assert set(plan["peft"]["runs"]) <= set(plan["lofit"]["runs"])
    gpu = plans["gpu"]
    assert len(gpu["seeds"]) >= 3 and min(len(v) for v in gpu["lr_grid"].values()) >= 3
    assert set(gpu["peft"]["runs"]) == {"mquake", "clutrr"}

"""pipelines/common.py `limit_for`: the device kind's limit, capped by the active profile (one rule for every stage)."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "pipelines"))

from common import limit_for  # noqa: E402

PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
limits = st.none() | st.integers(1, 10_000)


def params_with(device: str, limit: dict, profile: dict) -> dict:
    return {"model": {"device": device}, "ood": {"limit": limit}, "profile": "p", "profiles": {"p": profile}}


@given(cpu=limits, cuda=limits, cap=limits, device=st.sampled_from(["cpu", "cuda", "cuda:1"]))
def test_the_profile_caps_the_device_limit(cpu, cuda, cap, device):
    profile = {} if cap is None else {"ood_limit": cap}
    limit = limit_for(params_with(device, {"cpu": cpu, "cuda": cuda}, profile), "ood")
    chosen = cuda if device.startswith("cuda") else cpu
    expected = [value for value in (chosen, cap) if value is not None]
    assert limit == (min(expected) if expected else None)


def test_a_missing_device_entry_names_the_field():
    with pytest.raises(SystemExit, match=r"params.yaml: ood.limit has no 'cuda' entry"):
        limit_for(params_with("cuda", {"cpu": 5}, {}), "ood")


def device_limits(params: dict) -> list[tuple[str, str]]:
    """Every `{cpu: …, cuda: …}` limit in params.yaml, as (section, key)."""
    return [
        (section, key)
        for section, block in params.items()
        if isinstance(block, dict)
        for key, value in block.items()
        if isinstance(value, dict) and set(value) == {"cpu", "cuda"}
    ]


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_the_quick_profile_caps_every_device_limited_stage(device):
    quick = copy.deepcopy(PARAMS) | {"profile": "quick"}
    quick["model"]["device"] = device
    found = device_limits(quick)
    assert {("ood", "limit"), ("open_ended", "limit")} <= set(found)
    for section, key in found:
        assert limit_for(quick, section, key) <= quick["profiles"]["quick"]["eval_limit"], (section, key)


def test_the_full_profile_keeps_the_study_limits():
    full = copy.deepcopy(PARAMS) | {"profile": "full"}
    full["model"]["device"] = "cpu"
    for section, key in device_limits(full):
        assert limit_for(full, section, key) == full[section][key]["cpu"]

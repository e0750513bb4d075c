"""Stage outputs that a fresh clone must not recompute are in git, not only in the DVC cache.

The DVC cache does not survive a new machine; the main and comparison studies keep every stage
output except the raw data and the converted model in git (`cache: false`), and `.gitignore` must
not hide them, or a clone would rerun finished stages (or lose a part-run study).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CACHED = {"data/models/base", "data/raw"}  # large, rebuilt from pinned sources


def declared_outputs(dvc_file: Path) -> list[tuple[str, str, dict]]:
    """(stage, path, options) of every `outs`/`metrics`/`plots` entry, paths as written."""
    stages = yaml.safe_load(dvc_file.read_text(encoding="utf-8"))["stages"]
    found = []
    for name, stage in stages.items():
        body = stage.get("do", stage)
        for key in ("outs", "metrics", "plots"):
            for entry in body.get(key, []):
                path, options = (entry, {}) if isinstance(entry, str) else next(iter(entry.items()))
                found.append((name, path, options or {}))
    return found


@pytest.mark.parametrize("dvc_file", ["dvc.yaml", "compare/dvc.yaml"])
def test_every_small_output_is_kept_in_git(dvc_file):
    outputs = declared_outputs(ROOT / dvc_file)
    assert outputs
    for stage, path, options in outputs:
        if path in CACHED:
            continue
        assert options.get("cache") is False, f"{dvc_file}: stage {stage} output {path} is DVC-cached only"


@pytest.mark.parametrize("dvc_file", ["dvc.yaml", "compare/dvc.yaml", "recommend/dvc.yaml"])
def test_dependencies_are_plain_paths(dvc_file):
    """DVC's schema: a dependency is a path string (options belong to outputs only)."""
    stages = yaml.safe_load((ROOT / dvc_file).read_text(encoding="utf-8"))["stages"]
    for name, stage in stages.items():
        for dep in stage.get("do", stage).get("deps", []):
            assert isinstance(dep, str), f"{dvc_file}: stage {name} has a non-path dependency {dep!r}"


def test_gitignore_does_not_hide_the_comparison_outputs():
    probe = ["compare/runs/mquake/lora-s42/summary.json", "compare/runs/mquake/lora-s42/train/adapter/adapter_model.safetensors",
             "compare/runs/mquake/grid-lofit/lr0.01/val.json", "runs/mquake/tune/adapter/adapter_config.json"]
    hidden = subprocess.run(["git", "check-ignore", *probe], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert hidden == []
    checkpoint = "compare/runs/mquake/lora-s42/train/checkpoints/last.ckpt"
    assert subprocess.run(["git", "check-ignore", "-q", checkpoint], cwd=ROOT).returncode == 0


def test_dvc_ignores_what_git_does_not_keep():
    """A fresh clone has only what git keeps; DVC must hash the stage folders without the rest
    (checkpoints, the main runs' hparams.yaml), or a clone sees every finished stage as changed."""
    dropped = ["runs/mquake/tune/checkpoints/last.ckpt", "runs/mquake/select/logs/hparams.yaml",
               "compare/runs/mquake/lora-s42/train/checkpoints/best.ckpt", "compare/runs/mquake/grid-lofit/lr0.03/epoch=1.ckpt"]
    kept = ["runs/mquake/tune/metrics.json", "runs/mquake/tune/logs/metrics.csv", "runs/mquake/select/heads.json",
            "compare/runs/mquake/grid-lofit/lr0.03/logs/hparams.yaml", "compare/runs/mquake/lora-s42/summary.json"]
    dvc = Path(sys.executable).parent / "dvc"
    for path in dropped + kept:
        by_git = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0
        by_dvc = subprocess.run([str(dvc), "check-ignore", "-q", path], cwd=ROOT).returncode == 0
        assert by_git == by_dvc == (path in dropped), (path, by_git, by_dvc)

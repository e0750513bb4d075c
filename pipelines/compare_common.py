"""What every comparison stage (compare/dvc.yaml) shares: where it writes, which test examples it
scores, how it evaluates an edit folder, and the `info.json` that tells the report what ran.

Comparison evaluations score the first `compare.eval_limit` test examples (per device kind), so
the report rescores the main study's base and LoFiT predictions on the same prefix.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from common import COMPARE_RUNS, RunParams, limit_for

from lofit.cli import evaluate
from lofit.io import write_json

INFO_FILE = "info.json"


def experiment_dir(run: str, label: str) -> Path:
    """A fresh compare/runs/RUN/LABEL (a stage's outputs start clean)."""
    out = COMPARE_RUNS / run / label
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    return out


def eval_limit(run: RunParams) -> int | None:
    """Test examples per comparison evaluation: `compare.eval_limit` for the device kind, capped by the profile's."""
    caps = [value for value in (limit_for(run.params, "compare", "eval_limit"), run.eval_limit) if value is not None]
    return min(caps) if caps else None


def train_limit(run: RunParams, train_size: int | None) -> int | None:
    """First-N training examples: the experiment's size, capped by the profile's limit."""
    caps = [value for value in (train_size, run.profile.get("train_limit")) if value is not None]
    return min(caps) if caps else None


def evaluate_edit(run: RunParams, edit: Path | None, out: Path) -> dict[str, Any]:
    """Score `edit` (None: the base model) on the run's test prefix; writes predictions + summary into `out`."""
    return evaluate(
        task=run.task(),
        adapter=str(edit) if edit is not None else None,
        backbone=run.backbone(),
        split="test",
        limit=eval_limit(run),
        batch_size=run.params["eval"]["batch_size"],
        output_dir=str(out),
    )


def trainable_parameters(train_dir: Path) -> int:
    """`trainable_parameters` from a training run's metrics.json."""
    return int(json.loads((train_dir / "metrics.json").read_text())["trainable_parameters"])


def drop_checkpoints(train_dir: Path) -> None:
    """Checkpoints only serve resuming; a finished comparison keeps the exported edit alone."""
    shutil.rmtree(train_dir / "checkpoints", ignore_errors=True)


def write_info(
    out: Path,
    run: RunParams,
    *,
    method: str,
    experiment: str,
    seed: int | None,
    edited_parameters: int,
    heads_source: str | None = None,
    top_k: int | None = None,
    train_size: int | None = None,
    reused_main_run: bool = False,
    choice: dict[str, Any] | None = None,
) -> None:
    write_json(
        out / INFO_FILE,
        {
            "method": method,
            "run": run.name,
            "task": run.run["task"],
            "seed": seed,
            "experiment": experiment,
            "heads_source": heads_source,
            "top_k": top_k,
            "train_size": train_size,
            "edited_parameters": edited_parameters,
            "reused_main_run": reused_main_run,
            "choice": choice,
        },
    )

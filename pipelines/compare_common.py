"""What every comparison stage (compare/dvc.yaml) shares: the active plan, where it writes, how a
method trains at the main run's budget, which test examples it scores, the learning rate chosen on
val, and the `info.json` that tells the report what ran.

Tables 1 and 3 score the full test sets; ablations the first `compare.eval_limit` test examples (per
device kind), so the report rescores the main study's predictions on the same prefix.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from dataclasses import replace

from common import COMPARE_RUNS, EDIT_FOLDERS, RunParams, limit_for, metric_names
from comparison.protocol import VAL_FILE, choose_lr
from comparison.protocol import active_plan as protocol_plan

from lofit.cli import evaluate
from lofit.io import write_json

INFO_FILE = "info.json"
TRAINED = ("lofit", "lora", "red", "reft")  # methods with an lr grid


def active_plan(params: dict[str, Any]) -> dict[str, Any]:
    """The compare plan for model.device (`comparison.protocol.active_plan`)."""
    return protocol_plan(params, "compare", "{kind}_plan")


def grid_dir(run: str, method: str) -> Path:
    """compare/runs/RUN/grid-METHOD: one folder per learning rate of the method's grid."""
    return COMPARE_RUNS / run / f"grid-{method}"


def chosen_lr(run: RunParams, method: str) -> tuple[float, list[dict[str, Any]]]:
    """The method's lr chosen on the run's val split from its grid stages, and the grid's rows."""
    grid = active_plan(run.params)["lr_grid"][method]
    return choose_lr(grid_dir(run.name, method), grid, metric_names(run.run["task"]))


def is_main_step2(run: RunParams, lr: float, seed: int) -> bool:
    """Step 2 with the main run's heads, lr and seed is the main run itself: not retrained."""
    return float(lr) == float(run.run["tune"]["lr"]) and seed == run.params["seed"]


def train_method(run: RunParams, method: str, lr: float, seed: int, out: Path, *, heads: Path | None = None,
                 top_k: int | None = None, train_size: int | None = None) -> Path:
    """Train `method` at the main run's step-2 budget (epochs, batch size, examples); returns the
    training folder. LoFiT is step 2 on `heads` (default: the main run's step-1 ranking) at `top_k`."""
    from lofit.cli import tune
    from lofit.methods.commands import lora, red, reft
    from lofit.methods.configs import LoRAStepConfig, REDStepConfig, ReFTStepConfig
    from lofit.training.config import TuningConfig

    data = replace(run.data(), train_limit=train_limit(run, train_size))
    if method == "lofit":
        tuning = TuningConfig(heads=str(heads or run.dir / "select" / "heads.json"),
                              top_k=run.run["tune"]["top_k"] if top_k is None else top_k, lr=lr, seed=seed)
        tune(task=run.task(), tuning=tuning, backbone=run.backbone(), data=data, trainer=run.trainer("tune"),
             output_dir=str(out))
    else:
        command, config = {"lora": (lora, LoRAStepConfig), "red": (red, REDStepConfig), "reft": (reft, ReFTStepConfig)}[method]
        settings = dict(run.params["compare"]["methods"].get(method) or {})
        command(run.task(), config(**settings, lr=lr, seed=seed), backbone=run.backbone(), data=data,
                trainer=run.trainer("tune"), output_dir=str(out))
    drop_checkpoints(out)
    return out


def evaluate_val(run: RunParams, edit: Path, out: Path) -> dict[str, Any]:
    """Score `edit` on the run's val split (all of it) into `out`/val/ and write `out`/val.json."""
    summary = evaluate(task=run.task(), adapter=str(edit), backbone=run.backbone(), split="val",
                       limit=run.profile.get("val_limit"), batch_size=run.params["eval"]["batch_size"],
                       output_dir=str(out / "val"))
    write_json(out / VAL_FILE, {**summary, "split": "val"})
    return summary


def edit_of(train_dir: Path, method: str) -> Path:
    return train_dir / EDIT_FOLDERS[method]


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


def evaluate_edit(run: RunParams, edit: Path | None, out: Path, *, full: bool = False) -> dict[str, Any]:
    """Score `edit` (None: the base model) on the run's test prefix (`full`: the whole test set, as
    the main study, capped only by the profile); writes predictions + summary into `out`."""
    return evaluate(
        task=run.task(),
        adapter=str(edit) if edit is not None else None,
        backbone=run.backbone(),
        split="test",
        limit=run.eval_limit if full else eval_limit(run),
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

"""DVC stages that train a method on one run's task (compare/dvc.yaml) and score it on the test prefix.

- `peft@RUN-METHOD-SEED`: LoRA or RED with `compare.peft.<method>` settings (paper Table 3);
- `data_efficiency@RUN-SIZE-METHOD-SEED`: LoFiT (both steps) or LoRA on the first SIZE examples;
- `lofit_seeds@RUN-SEED`: LoFiT (both steps) again with another seed, for seed averages.
Every method trains for the run's step-2 epochs (`runs.RUN.tune.epochs`), LoFiT's budget.
Writes compare/runs/RUN/LABEL/.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from common import EDIT_FOLDERS, RunParams, adapter_heads, run_params
from compare_common import drop_checkpoints, evaluate_edit, experiment_dir, train_limit, trainable_parameters, write_info

from lofit.cli import select, tune
from lofit.methods.commands import lora, red
from lofit.methods.lora import LoRAStepConfig
from lofit.methods.red import REDStepConfig
from lofit.training.config import SelectionConfig, TuningConfig


def train_lofit(run: RunParams, out: Path, seed: int, limit: int | None) -> Path:
    """Step 1 then step 2 with the run's settings; returns the step-2 folder."""
    data = replace(run.data(), train_limit=limit)
    step1, step2 = run.run["select"], run.run["tune"]
    select(
        task=run.task(),
        selection=SelectionConfig(lr=step1["lr"], l1_lambda=step1["l1_lambda"], seed=seed),
        backbone=run.backbone(),
        data=data,
        trainer=run.trainer("select"),
        output_dir=str(out / "select"),
    )
    tune(
        task=run.task(),
        tuning=TuningConfig(heads=str(out / "select" / "heads.json"), top_k=step2["top_k"], lr=step2["lr"], seed=seed),
        backbone=run.backbone(),
        data=data,
        trainer=run.trainer("tune"),
        output_dir=str(out / "tune"),
    )
    for step in ("select", "tune"):
        drop_checkpoints(out / step)
    return out / "tune"


def train_peft(run: RunParams, out: Path, method: str, seed: int, limit: int | None) -> Path:
    """LoRA or RED with `compare.peft.<method>` settings; returns the training folder (= `out`)."""
    settings = dict(run.params["compare"]["peft"][method])
    command, config = (lora, LoRAStepConfig) if method == "lora" else (red, REDStepConfig)
    command(
        run.task(),
        config(**settings, seed=seed),
        backbone=run.backbone(),
        data=replace(run.data(), train_limit=limit),
        trainer=run.trainer("tune"),
        output_dir=str(out),
    )
    drop_checkpoints(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", required=True)
    parser.add_argument("--method", choices=["lofit", "lora", "red"], required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--train-size", type=int, default=None, help="train on the first N examples (default: all)")
    parser.add_argument("--experiment", choices=["table3", "data_efficiency", "lofit_seeds"], required=True)
    args = parser.parse_args()
    if args.train_size is not None and args.train_size <= 0:
        parser.error(f"--train-size must be positive, got {args.train_size}")
    run = run_params(args.run)
    size = f"n{args.train_size}-" if args.train_size is not None else ""
    out = experiment_dir(args.run, f"{size}{args.method}-s{args.seed}")
    limit = train_limit(run, args.train_size)
    if args.method == "lofit":
        train_dir = train_lofit(run, out, args.seed, limit)
    else:
        train_dir = train_peft(run, out, args.method, args.seed, limit)
    evaluate_edit(run, train_dir / EDIT_FOLDERS[args.method], out)
    write_info(
        out,
        run,
        method=args.method,
        experiment=args.experiment,
        seed=args.seed,
        edited_parameters=trainable_parameters(train_dir),
        heads_source=args.run if args.method == "lofit" else None,
        top_k=adapter_heads(train_dir)[0] if args.method == "lofit" else None,
        train_size=args.train_size,
    )


if __name__ == "__main__":
    main()

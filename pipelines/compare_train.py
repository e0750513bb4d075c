"""DVC stages that train a method on one run's task with its val-chosen lr (compare/dvc.yaml):

- `lofit@RUN-SEED` / `peft@RUN-METHOD-SEED` (Tables 1 and 3): LoFiT step 2 on the main run's
  step-1 heads, or LoRA, RED, ReFT, with the lr its grid chose on val, scored on the full test set;
- `data_efficiency@RUN-SIZE-METHOD-SEED`: LoFiT (both steps) or LoRA on the first SIZE training
  examples, at the chosen lr, scored on the ablations' test prefix.
Every method trains for the run's step-2 epochs and batch size (the main run's budget). The grid's
seed (the main `seed`) at the chosen lr is the grid point itself: its edit is scored, not retrained
(and LoFiT at the main lr and seed is the main run: its test predictions are copied).
Writes compare/runs/RUN/LABEL/.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import replace
from pathlib import Path

from common import RunParams, adapter_heads, run_params
from compare_common import (
    TRAINED,
    chosen_lr,
    drop_checkpoints,
    edit_of,
    evaluate_edit,
    experiment_dir,
    grid_dir,
    is_main_step2,
    train_limit,
    train_method,
    trainable_parameters,
    write_info,
)
from comparison.protocol import lr_label


def train_lofit_both_steps(run: RunParams, out: Path, lr: float, seed: int, train_size: int) -> Path:
    """Step 1 with the run's settings, then step 2 at `lr`, on the first `train_size` examples."""
    from lofit.cli import select
    from lofit.training.config import SelectionConfig

    step1 = run.run["select"]
    select(
        task=run.task(),
        selection=SelectionConfig(lr=step1["lr"], l1_lambda=step1["l1_lambda"], seed=seed),
        backbone=run.backbone(),
        data=replace(run.data(), train_limit=train_limit(run, train_size)),
        trainer=run.trainer("select"),
        output_dir=str(out / "select"),
    )
    drop_checkpoints(out / "select")
    return train_method(run, "lofit", lr, seed, out / "tune", heads=out / "select" / "heads.json", train_size=train_size)


def copy_main_predictions(run: RunParams, out: Path) -> None:
    """The main run's LoFiT test evaluation (the full test set) stands for a reused main run."""
    for name in ("predictions.jsonl", "summary.json"):
        shutil.copyfile(run.dir / "eval" / "lofit" / name, out / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", required=True)
    parser.add_argument("--method", choices=TRAINED, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--train-size", type=int, default=None, help="train on the first N examples (data_efficiency)")
    parser.add_argument("--experiment", choices=["table", "data_efficiency"], required=True)
    args = parser.parse_args()
    if (args.experiment == "data_efficiency") != (args.train_size is not None):
        parser.error("--train-size goes with --experiment data_efficiency, and only with it")
    if args.train_size is not None and args.train_size <= 0:
        parser.error(f"--train-size must be positive, got {args.train_size}")
    run = run_params(args.run)
    lr, grid = chosen_lr(run, args.method)
    size = f"n{args.train_size}-" if args.train_size is not None else ""
    out = experiment_dir(args.run, f"{size}{args.method}-s{args.seed}")
    reused = False
    if args.experiment == "data_efficiency":
        if args.method == "lofit":
            train_dir = train_lofit_both_steps(run, out, lr, args.seed, args.train_size)
        else:
            train_dir = train_method(run, args.method, lr, args.seed, out, train_size=args.train_size)
        evaluate_edit(run, edit_of(train_dir, args.method), out)
    else:
        reused = args.method == "lofit" and is_main_step2(run, lr, args.seed)
        if reused:
            train_dir = run.dir / "tune"
        elif args.seed == run.params["seed"]:
            train_dir = grid_dir(args.run, args.method) / lr_label(lr)
        else:
            train_dir = train_method(run, args.method, lr, args.seed, out / "train")
        if reused and run.eval_limit is None:
            copy_main_predictions(run, out)
        else:
            evaluate_edit(run, edit_of(train_dir, args.method), out, full=True)
    lofit_dir = train_dir if args.method == "lofit" else None
    write_info(
        out,
        run,
        method=args.method,
        experiment=args.experiment,
        seed=args.seed,
        edited_parameters=trainable_parameters(train_dir),
        heads_source=args.run if lofit_dir else None,
        top_k=adapter_heads(lofit_dir)[0] if lofit_dir else None,
        train_size=args.train_size,
        reused_main_run=reused,
        choice={"lr": lr, "grid": grid},
    )


if __name__ == "__main__":
    main()

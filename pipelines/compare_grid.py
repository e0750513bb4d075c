"""DVC stages `grid_METHOD@RUN-LR` (compare/dvc.yaml): one point of a method's learning-rate grid.

Trains METHOD (lofit: step 2 on the main run's step-1 heads; lora, red, reft) with learning rate
LR and the main `seed` at the main run's budget, scores it on the run's val split, and writes
compare/runs/RUN/grid-METHOD/lrLR/ (the training folder with its edit, val/ predictions and
val.json). Step 2 at the main run's own lr is the main run: its adapter is scored, not retrained.
The training stages choose the lr from these val.json files (`compare_common.chosen_lr`).
"""

from __future__ import annotations

import argparse
import shutil

from common import run_params
from compare_common import (
    TRAINED,
    active_plan,
    edit_of,
    evaluate_val,
    grid_dir,
    is_main_step2,
    train_method,
    trainable_parameters,
    write_info,
)
from comparison.protocol import lr_label


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", required=True)
    parser.add_argument("--method", choices=TRAINED, required=True)
    parser.add_argument("--lr", type=float, required=True)
    args = parser.parse_args()
    run = run_params(args.run)
    grid = active_plan(run.params)["lr_grid"][args.method]
    if args.lr not in [float(value) for value in grid]:
        parser.error(f"--lr {args.lr} is not in compare.plan.lr_grid.{args.method} {grid}")
    seed = run.params["seed"]
    out = grid_dir(args.run, args.method) / lr_label(args.lr)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    reused = args.method == "lofit" and is_main_step2(run, args.lr, seed)
    train_dir = run.dir / "tune" if reused else train_method(run, args.method, args.lr, seed, out)
    evaluate_val(run, edit_of(train_dir, args.method), out)
    write_info(out, run, method=args.method, experiment="grid", seed=seed,
               edited_parameters=trainable_parameters(train_dir), reused_main_run=reused, choice={"lr": args.lr})


if __name__ == "__main__":
    main()

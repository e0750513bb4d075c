"""DVC stages `iti@RUN` / `repe@RUN` (compare/dvc.yaml): a training-free baseline on a TruthfulQA run.

Fits on the run's train split, picks the grid point (`compare.plan.iti` / `compare.plan.repe`) with
the best val MC1 (then MC2), and scores the chosen edit on the full test set (Table 1). Writes compare/runs/RUN/METHOD/.
"""

from __future__ import annotations

import argparse

from common import EDIT_FOLDERS, run_params
from compare_common import active_plan, evaluate_edit, experiment_dir, write_info

from lofit.methods.commands import iti, repe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", required=True)
    parser.add_argument("--method", choices=["iti", "repe"], required=True)
    args = parser.parse_args()
    run = run_params(args.run)
    settings = active_plan(run.params)[args.method]
    out = experiment_dir(args.run, args.method)
    common = dict(
        task=run.task(),
        backbone=run.backbone(),
        alpha=tuple(settings["alpha"]),
        seed=run.params["seed"],
        val_limit=run.profile.get("val_limit"),
        batch_size=run.params["eval"]["batch_size"],
        output_dir=str(out),
    )
    if args.method == "iti":
        result = iti(top_k=tuple(settings["top_k"]), **common)
    else:
        result = repe(top_layers=tuple(settings["top_layers"]), **common)
    evaluate_edit(run, out / EDIT_FOLDERS[args.method], out, full=True)
    chosen = result["chosen"]
    if args.method == "iti":
        choice = {"top_k": result["heads"], "alpha": chosen["alpha"], "grid_top_k": chosen["top_k"]}
    else:
        choice = {"layers": result["layers"], "alpha": chosen["alpha"], "grid_top_layers": chosen["top_layers"]}
    write_info(
        out,
        run,
        method=args.method,
        experiment="table1",
        seed=None,
        edited_parameters=result["edited_parameters"],
        top_k=result.get("heads"),
        choice=choice,
    )


if __name__ == "__main__":
    main()

"""DVC stages `base` and `train@METHOD-SIZE-SEED` (recommend/dvc.yaml): the scored test runs.

- `base`: the frozen model zero-shot (no training) on the test samples;
- `train`: METHOD at the lr chosen on val AUC (at SIZE's grid, or the nearest grid size's), trained
  on the SIZE-sample set drawn with SEED, scored on the first `recommend.plan.test_limit` test
  samples. The main seed at a size with its own grid is that grid point: its edit is scored, not
  retrained.
Writes recommend/runs/base/ or recommend/runs/METHOD/nSIZE-sSEED/ (predictions.jsonl with p_yes per
sample, summary.json, info.json).
"""

from __future__ import annotations

import argparse

from recommend_common import BASE, TRAINED, edit_of, fresh, grid_point, run_dir, study, trained_dir, write_info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--method", choices=(BASE, *TRAINED), required=True)
    parser.add_argument("--size", type=int, help="few-shot training samples (not for base)")
    parser.add_argument("--seed", type=int, help="training-set draw and initialisation (not for base)")
    args = parser.parse_args()
    if (args.method == BASE) != (args.size is None and args.seed is None):
        parser.error("--size and --seed go with a trained method, and only with it")
    rec = study()
    if args.method == BASE:
        out = fresh(run_dir(BASE))
        rec.score(None, "test", out)
        write_info(out, method=BASE, size=0, seed=None, train_dir=None, choice=None)
        return
    if args.size not in rec.plan["train_sizes"]:
        parser.error(f"--size {args.size} is not in recommend.plan.train_sizes {rec.plan['train_sizes']}")
    lr, grid_size, rows = rec.chosen_lr(args.method, args.size)
    out = fresh(run_dir(args.method, args.size, args.seed))
    if args.seed == rec.seed and grid_size == args.size:
        train_dir = trained_dir(grid_point(args.method, args.size, lr), args.method)
    else:
        train_dir = rec.train(args.method, args.size, lr, args.seed, out)
    rec.score(edit_of(train_dir, args.method), "test", out)
    write_info(out, method=args.method, size=args.size, seed=args.seed, train_dir=train_dir,
               choice={"lr": lr, "grid_size": grid_size, "grid": rows})


if __name__ == "__main__":
    main()

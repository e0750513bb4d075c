"""DVC stages `grid@METHOD-SIZE-LR` (recommend/dvc.yaml): one point of a method's lr grid.

Trains METHOD (lofit: step 1 then step 2; lora) at learning rate LR with the main `seed` on the
SIZE-sample few-shot set drawn with that seed, scores it on the first `recommend.plan.val_limit`
val samples, and writes recommend/runs/grid/METHOD/nSIZE/lrLR/ (training folders, val/ and
val.json). The test split is never scored here; `recommend_train.py` chooses the lr from val.json.
"""

from __future__ import annotations

import argparse

from recommend_common import TRAINED, edit_of, fresh, grid_point, study, write_info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--method", choices=TRAINED, required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--lr", type=float, required=True)
    args = parser.parse_args()
    rec = study()
    if args.size not in rec.plan["grid_sizes"]:
        parser.error(f"--size {args.size} is not in recommend.plan.grid_sizes {rec.plan['grid_sizes']}")
    grid = rec.plan["lr_grid"][args.method]
    if args.lr not in [float(value) for value in grid]:
        parser.error(f"--lr {args.lr} is not in recommend.plan.lr_grid.{args.method} {grid}")
    out = fresh(grid_point(args.method, args.size, args.lr))
    train_dir = rec.train(args.method, args.size, args.lr, rec.seed, out)
    rec.score_val(edit_of(train_dir, args.method), out)
    write_info(out, method=args.method, size=args.size, seed=rec.seed, train_dir=train_dir, choice={"lr": args.lr})


if __name__ == "__main__":
    main()

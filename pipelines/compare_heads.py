"""DVC stages that run LoFiT step 2 on heads chosen some other way (compare/dvc.yaml):

- `random_heads@RUN-SEED`: K heads drawn at random (seeded);
- `iti_heads@RUN-SEED`: the K heads whose ITI probes score best (from `iti@RUN`);
- `head_swap@RUN-SOURCE-SEED`: the top K of the step-1 ranking of run SOURCE;
- `k_sweep@RUN-TOPK-SEED`: the top TOPK (count or fraction) of the run's own ranking.
K is the run's `tune.top_k` unless given; the main run's K is read from its adapter. Step 2 trains
at the main run's budget with LoFiT's lr chosen on val (`grid_lofit@RUN`). A configuration equal to
the main run's step 2 (own heads, same K, the main seed and lr) is not retrained: the main adapter
is scored on the test prefix and `info.json` says `reused_main_run`. The K sweep also scores val
(val.json), from which the report picks K.
Writes compare/runs/RUN/LABEL/.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import COMPARE_RUNS, EDIT_FOLDERS, RunParams, adapter_heads, run_params
from compare_common import (
    chosen_lr,
    evaluate_edit,
    evaluate_val,
    experiment_dir,
    is_main_step2,
    train_method,
    trainable_parameters,
    write_info,
)

from lofit.io import read_json
from lofit.methods.random_heads import write_random_heads
from lofit.training.heads import HeadRanking, resolve_top_k


def parse_top_k(text: str) -> int | float:
    """"27" → 27 heads, "0.05" → 5 % of all heads."""
    return float(text) if any(mark in text for mark in ".e") else int(text)


def heads_file(run: RunParams, own: HeadRanking, source: str, out: Path, top_k: int, seed: int) -> Path:
    """The ranking step 2 reads: random (written here, for the model of the run's own ranking),
    ITI probes, or a run's step-1 heads."""
    if source == "random":
        return write_random_heads(out / "heads.json", own.model, own.geometry, top_k, seed)
    if source == "iti":
        return COMPARE_RUNS / run.name / "iti" / "probes.json"
    return Path("runs") / source / "select" / "heads.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", required=True)
    parser.add_argument("--heads", required=True, help="random, iti, or the name of a run whose step-1 heads to use")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--top-k", type=parse_top_k, default=None, help="heads (int) or fraction (float); default: the run's")
    parser.add_argument("--experiment", choices=["random_heads", "iti_heads", "head_swap", "k_sweep"], required=True)
    args = parser.parse_args()
    run = run_params(args.run)
    requested = run.run["tune"]["top_k"] if args.top_k is None else args.top_k
    ranking_path = run.dir / "select" / "heads.json"
    own = HeadRanking.from_json(read_json(ranking_path), source=str(ranking_path))
    total = own.geometry.num_total_heads
    top_k = resolve_top_k(requested, total)
    main_k, _ = adapter_heads(run.dir / "tune")
    label = {"random": "heads-random", "iti": "heads-iti"}.get(args.heads, f"heads-from-{args.heads}")
    if args.experiment == "k_sweep":
        label = f"k{args.top_k}"
    out = experiment_dir(args.run, f"{label}-s{args.seed}")
    lr, _ = chosen_lr(run, "lofit")
    reused = args.heads == args.run and top_k == main_k and is_main_step2(run, lr, args.seed)
    if reused:
        train_dir = run.dir / "tune"
    else:
        heads = heads_file(run, own, args.heads, out, top_k, args.seed)
        train_dir = train_method(run, "lofit", lr, args.seed, out / "tune", heads=heads, top_k=top_k)
    evaluate_edit(run, train_dir / EDIT_FOLDERS["lofit"], out)
    if args.experiment == "k_sweep":
        evaluate_val(run, train_dir / EDIT_FOLDERS["lofit"], out)
    write_info(
        out,
        run,
        method="lofit",
        experiment=args.experiment,
        seed=args.seed,
        edited_parameters=trainable_parameters(train_dir),
        heads_source=args.heads,
        top_k=top_k,
        reused_main_run=reused,
        choice={"lr": lr},
    )


if __name__ == "__main__":
    main()

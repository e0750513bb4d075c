"""Time TruthfulQA MC1/MC2 scoring (fold 0 test) with the real backbone: cached prefix vs naive.

Three scorers: `naive` (one forward per candidate), `cached` (each question's context encoded
once, candidates batched on its KV cache) and `shared` (as cached, and the instruction + primer
prefix common to all questions encoded once for the whole set, which is what evaluation uses).
Prints one JSON object: seconds per scorer, speed-ups, largest |score difference|, MC1/MC2.
Usage: python benchmarks/mc_scoring.py --limit 20 [--data-dir data/raw] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from lofit.backbone import load_backbone  # noqa: E402
from lofit.evaluation.multiple_choice import (  # noqa: E402
    ANSWER_PREFIX,
    MC1,
    MC2,
    MCScores,
    plan_scoring,
    score_cached,
    score_naive,
    shared_prefix_of,
)
from lofit.tasks import get_task  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default="data/raw")
    parser.add_argument("--limit", type=int, default=None, help="first N questions (409 in all)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--skip-naive", action="store_true", help="time only the cached scorers")
    args = parser.parse_args()

    backbone = load_backbone()
    questions = get_task("truthfulqa", args.data_dir, fold=0).mc_questions("test")[: args.limit]
    plans = [
        plan_scoring(backbone, q.context, [ANSWER_PREFIX + a for a in q.true + q.false], ANSWER_PREFIX.rstrip(" "))
        for q in questions
    ]
    results = {}
    scorers = {
        "shared": lambda: (shared := shared_prefix_of(backbone, [q.context for q in questions]),
                           [score_cached(backbone, p, args.batch_size, shared) for p in plans])[1],
        "cached": lambda: [score_cached(backbone, p, args.batch_size) for p in plans],
        "naive": lambda: [score_naive(backbone, p) for p in plans],
    }
    if args.skip_naive:
        del scorers["naive"]
    for name, scorer in scorers.items():
        start = time.perf_counter()
        scores = scorer()
        results[name] = (time.perf_counter() - start, scores)
    metrics = {}
    for name, (_, scores) in results.items():
        mc1, mc2 = MC1(), MC2()
        for q, s in zip(questions, scores):
            split = MCScores(best=s[0], true=tuple(s[: len(q.true)]), false=tuple(s[len(q.true) :]))
            mc1.update([split])
            mc2.update([split])
        metrics[name] = {"mc1": float(mc1.compute()), "mc2": float(mc2.compute())}
    reference = "naive" if "naive" in results else "cached"
    seconds = {name: round(elapsed, 3) for name, (elapsed, _) in results.items()}
    report = {
        "questions": len(questions),
        "candidates": sum(len(p.continuation_ids) for p in plans),
        "threads": torch.get_num_threads(),
        "seconds": seconds,
        "speedup_vs_" + reference: {n: round(results[reference][0] / t, 2) for n, (t, _) in results.items()},
        "max_abs_score_difference_vs_" + reference: {
            n: max(abs(a - b) for c, r in zip(s, results[reference][1]) for a, b in zip(c, r)) for n, (_, s) in results.items()
        },
        "metrics": metrics,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

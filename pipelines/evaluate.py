"""DVC stage `evaluate_base@RUN` / `evaluate_lofit@RUN`: score one model on the run's test split.

Writes runs/RUN/eval/METHOD/{predictions.jsonl,summary.json}; the summary is a DVC metric.
"""

from __future__ import annotations

import argparse

from common import run_params

from lofit.cli import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", required=True)
    parser.add_argument("--method", choices=["base", "lofit"], required=True)
    args = parser.parse_args()
    run = run_params(args.run)
    adapter = str(run.dir / "tune" / "adapter") if args.method == "lofit" else None
    evaluate(
        task=run.task(),
        adapter=adapter,
        backbone=run.backbone(),
        split="test",
        limit=run.eval_limit,
        batch_size=run.params["eval"]["batch_size"],
        output_dir=str(run.dir / "eval" / args.method),
    )


if __name__ == "__main__":
    main()

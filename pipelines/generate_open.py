"""DVC stages `generate_open@RUN-METHOD`: open-ended TruthfulQA answers of the base or LoFiT model.

Writes runs/RUN/open_ended/METHOD/answers.jsonl for the judge stage.
"""

from __future__ import annotations

import argparse

from common import limit_for, run_params

from lofit.cli import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", required=True)
    parser.add_argument("--method", choices=["base", "lofit"], required=True)
    args = parser.parse_args()
    run = run_params(args.run)
    generate(
        task=run.task(),
        adapter=str(run.dir / "tune" / "adapter") if args.method == "lofit" else None,
        backbone=run.backbone(),
        split="test",
        limit=limit_for(run.params, "open_ended"),
        batch_size=run.params["eval"]["batch_size"],
        model_label=args.method,
        output_file=str(run.dir / "open_ended" / args.method / "answers.jsonl"),
    )


if __name__ == "__main__":
    main()

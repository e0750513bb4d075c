"""DVC stages `ood_base@TASK` / `ood_lofit@TASK`: out-of-domain checks (TriviaQA, NQ-open, MMLU).

The LoFiT model is the backbone with the TruthfulQA adapter of `ood.adapter_run` (the paper's
Table 5 setting); results go to runs/ood/METHOD/TASK/{predictions.jsonl,summary.json}.
"""

from __future__ import annotations

import argparse

from sample_limits import limit_for
from stage_params import RAW_DIR, RUNS_DIR, RunParams, load_params

from lofit.cli import evaluate
from lofit.training.config import TaskSpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", choices=["triviaqa", "nq_open", "mmlu"], required=True)
    parser.add_argument("--method", choices=["base", "lofit"], required=True)
    args = parser.parse_args()
    params = load_params()
    run = RunParams(params["ood"]["adapter_run"], params)
    limit = limit_for(run.params, "ood")
    options = dict(run.params["ood"]["options"].get(args.task) or {})
    if args.task == "mmlu":  # a seeded sample across all subjects, not the first subject's rows
        options["sample"], limit = limit, None
    adapter = str(run.dir / "tune" / "adapter") if args.method == "lofit" else None
    evaluate(
        task=TaskSpec(name=args.task, data_dir=RAW_DIR, options=options),
        adapter=adapter,
        backbone=run.backbone(),
        split="test",
        limit=limit,
        batch_size=run.params["eval"]["batch_size"],
        output_dir=str(RUNS_DIR / "ood" / args.method / args.task),
    )


if __name__ == "__main__":
    main()

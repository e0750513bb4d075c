"""DVC stages `ood_base@TASK` / `ood_lofit@TASK`: out-of-domain checks (TriviaQA, NQ-open, MMLU).

The LoFiT model is the backbone with the TruthfulQA adapter of `ood.adapter_run` (the paper's
Table 5 setting); results go to runs/ood/METHOD/TASK/{predictions.jsonl,summary.json}. Task options
(`ood.options`: 5-shot for all three sets) and the sample (`ood.limit`) are the same for every
method, so the report can pair their predictions question by question.
The comparison pipeline's `ood@METHOD-TASK` stages (compare/dvc.yaml) run the same check for the
ITI and RepE edits fitted on that run, into compare/runs/ood/METHOD/TASK/.
"""

from __future__ import annotations

import argparse

from common import COMPARE_RUNS, EDIT_FOLDERS, RAW_DIR, RUNS_DIR, RunParams, limit_for, load_params

from lofit.cli import evaluate
from lofit.training.config import TaskSpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", choices=["triviaqa", "nq_open", "mmlu"], required=True)
    parser.add_argument("--method", choices=["base", "lofit", "iti", "repe"], required=True)
    args = parser.parse_args()
    params = load_params()
    run = RunParams(params["ood"]["adapter_run"], params)
    limit = limit_for(run.params, "ood")
    options = dict(run.params["ood"]["options"].get(args.task) or {})
    if args.task == "mmlu":  # a seeded sample across all subjects, not the first subject's rows
        options["sample"], limit = limit, None
    adapter, out = None, RUNS_DIR / "ood" / args.method / args.task
    if args.method == "lofit":
        adapter = str(run.dir / "tune" / "adapter")
    elif args.method in ("iti", "repe"):
        adapter = str(COMPARE_RUNS / run.name / args.method / EDIT_FOLDERS[args.method])
        out = COMPARE_RUNS / "ood" / args.method / args.task
    evaluate(
        task=TaskSpec(name=args.task, data_dir=RAW_DIR, options=options),
        adapter=adapter,
        backbone=run.backbone(),
        split="test",
        limit=limit,
        batch_size=run.params["eval"]["batch_size"],
        output_dir=str(out),
    )


if __name__ == "__main__":
    main()

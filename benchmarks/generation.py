"""Time exact-match evaluation (greedy generation + parsing) with and without the early stop.

`before` generates every batch to EOS or the token budget (the parser's finality rule dropped);
`after` stops a batch once every row's answer is final. Both score the same test prefix with the
real backbone; the predictions must be identical. Decode steps (forward passes of the model) are
counted too: unlike seconds, they do not depend on what else the CPU runs. NQ-open stands for the
first-line rule of the open-domain sets (TriviaQA, NQ-open). After one untimed warm-up batch, the two
alternate `--repeats` times and the fastest of each counts (the CPU may be shared).
Prints one JSON object (and writes it to --out).
Usage: python benchmarks/generation.py --limit 64 [--model data/models/base] [--data-dir data/raw]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lofit.backbone import BackboneConfig, load_backbone  # noqa: E402
from lofit.evaluation.exact_match import (  # noqa: E402
    GenerationItem,
    evaluate_exact_match,
    lower_strip,
    parse_clutrr,
    parse_first_line,
    parse_mquake,
)
from lofit.io import write_json  # noqa: E402
from lofit.tasks import get_task  # noqa: E402
from lofit.tasks.mquake import answers_for, prompt_for  # noqa: E402
from lofit.tasks.open_qa import MAX_NEW_TOKENS as OPEN_QA_NEW_TOKENS  # noqa: E402

PARSERS = {"clutrr": parse_clutrr, "mquake": parse_mquake, "nq_open": parse_first_line}
NEW_TOKENS = {"clutrr": 16, "mquake": 16, "nq_open": OPEN_QA_NEW_TOKENS}  # what each task's evaluate() uses


def test_items(task: str, data_dir: str, limit: int) -> list[GenerationItem]:
    """The first `limit` test items exactly as the task's own evaluate() builds them."""
    if task == "clutrr":
        pairs = get_task("clutrr", data_dir).items("test")[:limit]
        return [GenerationItem(prompt, (target,)) for prompt, target in pairs]
    if task == "nq_open":
        return get_task("nq_open", data_dir).items()[:limit]
    records = get_task("mquake", data_dir).records("test")[:limit]
    return [GenerationItem(prompt_for(record), answers_for(record)) for record in records]


def timed_predictions(backbone, items, parser, batch_size: int, new_tokens: int) -> tuple[float, list[str], float, int]:
    """Seconds, predictions, mean generation length (characters) and forward passes of one evaluation."""
    forwards = []
    hook = backbone.model.register_forward_hook(lambda *args: forwards.append(1))
    try:
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            evaluate_exact_match(backbone, items, parser, lower_strip, folder, batch_size, new_tokens)
            seconds = time.perf_counter() - start
            lines = (Path(folder) / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    finally:
        hook.remove()
    rows = [json.loads(line) for line in lines]
    chars = sum(len(row["generation"]) for row in rows) / len(rows)
    return seconds, [row["prediction"] for row in rows], chars, len(forwards)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="data/models/base")
    parser.add_argument("--data-dir", default="data/raw")
    parser.add_argument("--limit", type=int, default=64, help="first N test examples per task")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tasks", nargs="+", choices=sorted(PARSERS), default=["clutrr", "mquake", "nq_open"])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    backbone = load_backbone(BackboneConfig(model=args.model))
    report: dict = {"model": args.model, "limit": args.limit, "batch_size": args.batch_size, "repeats": args.repeats}
    report["tasks"] = {}
    for task in args.tasks:
        answer_parser, new_tokens = PARSERS[task], NEW_TOKENS[task]
        items = test_items(task, args.data_dir, args.limit)
        timed_predictions(backbone, items[: args.batch_size], answer_parser, args.batch_size, new_tokens)  # warm-up
        runs: dict[str, list] = {"before": [], "after": []}
        for _ in range(args.repeats):
            without_rule = replace(answer_parser, is_final=None)
            runs["before"].append(timed_predictions(backbone, items, without_rule, args.batch_size, new_tokens))
            runs["after"].append(timed_predictions(backbone, items, answer_parser, args.batch_size, new_tokens))
        (before_s, before, before_chars, before_steps), (after_s, _, after_chars, after_steps) = (
            min(runs[key]) for key in ("before", "after")
        )
        report["tasks"][task] = {
            "examples": len(items),
            "early_stop_rule": answer_parser.is_final is not None,
            "before_s": round(before_s, 2),
            "after_s": round(after_s, 2),
            "speedup": round(before_s / after_s, 2),
            "predictions_identical": all(run[1] == before for run in runs["before"] + runs["after"]),
            "forward_passes": {"before": before_steps, "after": after_steps},
            "generation_chars_mean": {"before": round(before_chars, 1), "after": round(after_chars, 1)},
        }
    print(json.dumps(report))
    if args.out:
        write_json(args.out, report)


if __name__ == "__main__":
    main()

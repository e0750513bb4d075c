"""Evaluators: log-likelihood multiple choice, greedy generation, exact match; result files."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from lofit.io import write_json, write_jsonl

PREDICTIONS_FILE = "predictions.jsonl"
SUMMARY_FILE = "summary.json"
T = TypeVar("T")


def check_limit(limit: int | None, name: str = "limit") -> None:
    """`None` (all examples) or a positive count: `rows[:-3]` or `rows[:0]` would silently score
    the wrong examples or none."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"{name} must be a positive number of examples or None (all), got {limit!r}")


def first(rows: Sequence[T], limit: int | None) -> Sequence[T]:
    """The first `limit` rows (all when None), refusing a limit that would slice wrongly."""
    check_limit(limit)
    return rows if limit is None else rows[:limit]


def check_batch_size(batch_size: int, name: str = "batch_size") -> None:
    """A positive batch size: a zero step fails deep inside `range`, a negative one scores nothing."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"{name} must be a positive integer, got {batch_size!r}")


def check_examples(examples: Iterable, what: str = "examples") -> None:
    """Refuse to score zero examples: every mean over them would be NaN."""
    if not examples:
        raise ValueError(f"no {what} to evaluate (empty split, or a limit that selects none)")


def write_results(out_dir: str | Path | None, rows: Iterable[dict], summary: dict) -> None:
    """Write per-example rows and the summary atomically (nothing when `out_dir` is None).

    A non-finite metric (NaN log-probs from a broken model) is refused, naming it, rather than
    written as the non-JSON token `NaN`."""
    if out_dir is None:
        return
    out_dir = Path(out_dir)
    for name, value in summary.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{out_dir / SUMMARY_FILE}: metric '{name}' is {value} (the model's scores are not finite)")
    write_jsonl(out_dir / PREDICTIONS_FILE, rows)
    write_json(out_dir / SUMMARY_FILE, summary)

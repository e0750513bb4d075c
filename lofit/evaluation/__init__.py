"""Evaluators: log-likelihood multiple choice, greedy generation, exact match; result files."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from lofit.io import write_json, write_jsonl

PREDICTIONS_FILE = "predictions.jsonl"
SUMMARY_FILE = "summary.json"


def write_results(out_dir: str | Path | None, rows: Iterable[dict], summary: dict) -> None:
    """Write per-example rows and the summary atomically (nothing when `out_dir` is None)."""
    if out_dir is None:
        return
    out_dir = Path(out_dir)
    write_jsonl(out_dir / PREDICTIONS_FILE, rows)
    write_json(out_dir / SUMMARY_FILE, summary)

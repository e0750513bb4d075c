"""A task's summary recomputed from the per-example rows its evaluator wrote (e.g. on a prefix).

The comparison report scores the main study's predictions on the comparison stages' test prefix.
It does so with the evaluators' own definitions and reductions, so rescoring all rows gives back
the evaluator's `summary.json` exactly: MC1/MC2/MC3 from each question's saved answer scores,
exact match and choice accuracy from each row's saved `correct` verdict.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lofit.evaluation.multiple_choice import MC1, MC2, MC3, MCScores, QuestionMean


class RowMean(QuestionMean):
    """Share of rows whose verdict is true, reduced like `ExactMatch` and `ChoiceAccuracy`."""

    def update(self, verdicts: Iterable[bool]) -> None:
        for verdict in verdicts:
            self._add(float(verdict))


def truthfulqa_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """MC1/MC2/MC3 of `evaluate_truthfulqa_mc` rows (`scores_true[0]` is the best answer's score)."""
    metrics = {"mc1": MC1(), "mc2": MC2(), "mc3": MC3()}
    for row in rows:
        true = tuple(row["scores_true"])
        scores = MCScores(best=true[0], true=true, false=tuple(row["scores_false"]))
        for metric in metrics.values():
            metric.update([scores])
    return {**{name: float(metric.compute()) for name, metric in metrics.items()}, "num_examples": len(rows)}


def verdict_summary(rows: Sequence[Mapping[str, Any]], metric: str) -> dict[str, float]:
    """`metric` (exact_match, accuracy) as the share of rows marked `correct`."""
    mean = RowMean()
    mean.update(bool(row["correct"]) for row in rows)
    return {metric: float(mean.compute()), "num_examples": len(rows)}


def rescore(rows: Sequence[Mapping[str, Any]], primary_metric: str) -> dict[str, float]:
    """The summary the rows' evaluator writes, over `rows`: MC rows (`scores_true`) give MC1/MC2/MC3,
    every other evaluator's rows their `primary_metric` from the `correct` verdicts."""
    if not rows:
        raise ValueError("no rows to score")
    return truthfulqa_summary(rows) if "scores_true" in rows[0] else verdict_summary(rows, primary_metric)

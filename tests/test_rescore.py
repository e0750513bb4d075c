"""Prefix rescoring goes through the evaluators' definitions: MC1/MC2/MC3 from the saved answer scores."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lofit.evaluation.multiple_choice import MC1, MC2, MC3, MCScores
from lofit.evaluation.rescore import rescore

score = st.floats(min_value=-30, max_value=0, allow_nan=False)
question = st.tuples(st.lists(score, min_size=1, max_size=4), st.lists(score, min_size=1, max_size=4))


@given(st.lists(question, min_size=1, max_size=12))
def test_truthfulqa_rows_rescore_to_the_evaluators_metrics(questions):
    metrics = {"mc1": MC1(), "mc2": MC2(), "mc3": MC3()}
    rows = []
    for true, false in questions:
        scores = MCScores(best=true[0], true=tuple(true), false=tuple(false))
        for metric in metrics.values():
            metric.update([scores])
        # stored per-row values are not trusted: the summary is rebuilt from the scores
        rows.append({"scores_true": true, "scores_false": false, "mc1": -1.0, "mc2": -1.0, "mc3": -1.0})
    expected = {name: float(metric.compute()) for name, metric in metrics.items()}
    assert rescore(rows, "mc1") == {**expected, "num_examples": len(rows)}


@given(st.lists(st.booleans(), min_size=1, max_size=20))
def test_verdict_rows_rescore_to_the_share_correct(verdicts):
    summary = rescore([{"correct": v} for v in verdicts], "exact_match")
    assert summary == {"exact_match": pytest.approx(sum(verdicts) / len(verdicts)), "num_examples": len(verdicts)}


def test_no_rows_is_an_error():
    with pytest.raises(ValueError, match="no rows"):
        rescore([], "accuracy")

"""Bootstrap intervals, McNemar's exact test and pairing of predictions against known values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lofit.evaluation.stats import (
    bootstrap_mean_ci,
    check_paired,
    mcnemar_exact_p,
    paired_bootstrap_ci,
    paired_bootstrap_p_value,
)


@given(value=st.floats(-5, 5, allow_nan=False), n=st.integers(1, 30))
@settings(max_examples=25, deadline=None)
def test_bootstrap_interval_of_a_constant_sample_is_the_point(value, n):
    low, high = bootstrap_mean_ci([value] * n, resamples=200)
    assert low == pytest.approx(value) and high == pytest.approx(value)


def test_bootstrap_interval_of_two_points_is_their_range():
    # resampled means of [0, 1] are 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4: the 2.5 % and 97.5 %
    # quantiles are 0 and 1
    assert bootstrap_mean_ci([0.0, 1.0]) == (0.0, 1.0)


def test_bootstrap_interval_of_a_large_sample_matches_the_normal_interval():
    values = np.random.default_rng(1).random(2000) < 0.3
    mean, half = values.mean(), 1.96 * values.std() / math.sqrt(values.size)
    low, high = bootstrap_mean_ci(values)
    assert low == pytest.approx(mean - half, abs=0.004) and high == pytest.approx(mean + half, abs=0.004)


def test_paired_interval_is_the_interval_of_the_differences_and_is_seeded():
    a, b = [1, 0, 1, 1, 0, 0, 1, 0], [1, 1, 1, 0, 1, 0, 1, 1]
    assert paired_bootstrap_ci(a, b) == bootstrap_mean_ci(np.subtract(b, a))
    assert paired_bootstrap_ci(a, b, seed=3) == paired_bootstrap_ci(a, b, seed=3)
    assert paired_bootstrap_ci(a, a) == (0.0, 0.0)


def test_paired_samples_of_different_length_are_refused():
    with pytest.raises(ValueError, match="paired samples differ in length: 2 vs 3"):
        paired_bootstrap_ci([1, 0], [1, 0, 1])
    with pytest.raises(ValueError, match="differ in length"):
        mcnemar_exact_p([True], [True, False])


@pytest.mark.parametrize(
    "only_a, only_b, expected",
    [
        (1, 6, 2 * (1 + 7) / 2**7),  # 0.125
        (0, 5, 2 / 2**5),  # 0.0625
        (3, 3, 1.0),
        (0, 0, 1.0),
        (2, 10, 2 * (1 + 12 + 66) / 2**12),  # 0.03857
    ],
)
def test_mcnemar_exact_p_is_the_two_sided_binomial_tail(only_a, only_b, expected):
    a = [True] * only_a + [False] * only_b + [True] * 4 + [False] * 2  # 4 both right, 2 both wrong
    b = [False] * only_a + [True] * only_b + [True] * 4 + [False] * 2
    assert mcnemar_exact_p(a, b) == pytest.approx(expected)
    assert mcnemar_exact_p(b, a) == pytest.approx(expected)


def test_bootstrap_p_value_is_one_without_difference_and_small_with_a_clear_one():
    a = [1, 0] * 50
    assert paired_bootstrap_p_value(a, a) == 1.0
    better = [1] * 100
    assert paired_bootstrap_p_value(a, better) == pytest.approx(1 / 10_001)


def test_pairing_refuses_files_whose_questions_differ():
    rows = [{"prompt": "q1", "correct": True}, {"prompt": "q2", "correct": False}]
    check_paired(rows, rows[::-1][::-1])
    with pytest.raises(ValueError, match=r"question 1 differs \('q1' vs 'q2'\)"):
        check_paired(rows, rows[::-1])
    with pytest.raises(ValueError, match="2 vs 1 questions"):
        check_paired(rows, rows[:1])

"""Uncertainty of per-question scores and of paired comparisons (base vs. edited model).

Two models scored on the same questions are compared question by question: the paired difference
removes the between-question variance that two independent intervals would double count. The
bootstrap resamples questions with replacement from a fixed seed, so a report is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

RESAMPLES = 10_000
SEED = 0


def _as_array(values: Sequence[float], what: str = "values") -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{what}: need a non-empty 1-D sequence, got shape {array.shape}")
    return array


def _paired(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    """b - a per question; the two must score the same questions (same length)."""
    first, second = _as_array(a, "a"), _as_array(b, "b")
    if first.shape != second.shape:
        raise ValueError(f"paired samples differ in length: {first.size} vs {second.size}")
    return second - first


def _bootstrap_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    if resamples < 1:
        raise ValueError(f"resamples must be positive, got {resamples}")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 1000):  # bounded memory: 1000 × n indices at a time
        count = min(1000, resamples - start)
        means[start : start + count] = values[rng.integers(0, values.size, size=(count, values.size))].mean(axis=1)
    return means


def bootstrap_mean_ci(
    values: Sequence[float], confidence: float = 0.95, resamples: int = RESAMPLES, seed: int = SEED
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values`."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    means = _bootstrap_means(_as_array(values), resamples, seed)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def paired_bootstrap_ci(
    a: Sequence[float], b: Sequence[float], confidence: float = 0.95, resamples: int = RESAMPLES, seed: int = SEED
) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(b - a), resampling questions (pairs stay together)."""
    return bootstrap_mean_ci(_paired(a, b), confidence, resamples, seed)


def paired_bootstrap_p_value(
    a: Sequence[float], b: Sequence[float], resamples: int = RESAMPLES, seed: int = SEED
) -> float:
    """Two-sided p-value of "mean(b - a) = 0": the differences are shifted to mean 0 (the null) and
    resampled; p = (1 + #|resampled mean| >= |observed mean|) / (1 + resamples)."""
    differences = _paired(a, b)
    observed = differences.mean()
    null_means = _bootstrap_means(differences - observed, resamples, seed)
    # a tolerance so that resamples equal to the observed mean up to rounding count as extreme
    extreme = np.abs(null_means) >= abs(observed) - 1e-12
    return float((1 + extreme.sum()) / (1 + resamples))


def mcnemar_exact_p(a: Sequence[bool], b: Sequence[bool]) -> float:
    """Exact (binomial) two-sided McNemar p-value for paired right/wrong outcomes.

    Only discordant questions count: under the null, each of the n = n01 + n10 is equally likely
    to favour either model, so p = min(1, 2 · P(Binomial(n, 1/2) <= min(n01, n10))).
    """
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    only_b = sum(1 for x, y in zip(a, b) if y and not x)
    only_a = sum(1 for x, y in zip(a, b) if x and not y)
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2**n
    return min(1.0, 2 * tail)


def check_paired(rows_a: Sequence[dict], rows_b: Sequence[dict], key: str = "prompt") -> None:
    """Refuse (ValueError, naming the first mismatch) two predictions files unless both hold the
    same questions (`key`) in the same order, so their per-question outcomes pair up."""
    if len(rows_a) != len(rows_b):
        raise ValueError(f"cannot pair predictions: {len(rows_a)} vs {len(rows_b)} questions")
    for index, (row_a, row_b) in enumerate(zip(rows_a, rows_b)):
        if row_a[key] != row_b[key]:
            raise ValueError(f"cannot pair predictions: question {index + 1} differs ({row_a[key]!r} vs {row_b[key]!r})")

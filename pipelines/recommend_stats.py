"""Intervals and paired tests for AUC, which is not a mean of per-example outcomes.

lofit.evaluation.stats bootstraps means; AUC must be recomputed on every resample instead. The
bootstrap is stratified (positives and negatives resampled apart, each with its own count), so a
resample always has both classes and a perfect ranking stays perfect ([1, 1]). The resample
indices depend only on the labels and a fixed seed: every series scored on the same test samples
sees the same resamples, which is what makes the LoFiT − LoRA difference paired.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lofit.evaluation.stats import RESAMPLES, SEED

CONFIDENCE = 0.95


def auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Mann-Whitney AUC with ties counted one half (equal to torchmetrics' BinaryAUROC)."""
    return float(_aucs(np.asarray(scores, dtype=np.float64)[None, :], np.asarray(labels, dtype=bool))[0])


def _aucs(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AUC of each row of `scores` (rows × samples) against the same `labels`."""
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        raise ValueError(f"AUC needs both labels among the {labels.size} samples")
    out = np.empty(scores.shape[0])
    for row, values in enumerate(scores):
        _, groups, counts = np.unique(values, return_inverse=True, return_counts=True)
        ends = np.cumsum(counts)
        midranks = (ends - (counts - 1) / 2.0)[groups]
        out[row] = (midranks[labels].sum() - positives * (positives + 1) / 2.0) / (positives * negatives)
    return out


def resampled_aucs(scores: np.ndarray, labels: Sequence[bool], resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """AUC of every series (rows of `scores`, series × samples) on each stratified resample: resamples × series."""
    scores, labels = np.atleast_2d(np.asarray(scores, dtype=np.float64)), np.asarray(labels, dtype=bool)
    if scores.shape[1] != labels.size:
        raise ValueError(f"{scores.shape[1]} scores per series for {labels.size} labels")
    positive, negative = np.flatnonzero(labels), np.flatnonzero(~labels)
    rng = np.random.default_rng(seed)
    resample_labels = np.r_[np.ones(positive.size, bool), np.zeros(negative.size, bool)]
    out = np.empty((resamples, scores.shape[0]))
    for r in range(resamples):
        picks = np.r_[rng.choice(positive, positive.size), rng.choice(negative, negative.size)]
        out[r] = _aucs(scores[:, picks], resample_labels)
    return out


@dataclass(frozen=True)
class AUCCell:
    """One cell: AUC mean ± sd over seeds (n of them) and the 95 % bootstrap interval of the
    seed-averaged AUC over test samples; `resampled` is that average on every resample."""

    mean: float
    sd: float | None
    n: int
    low: float
    high: float
    examples: int
    resampled: tuple[float, ...]

    def text(self) -> str:
        sd = "—" if self.sd is None else f"{100 * self.sd:.1f}"
        return f"{100 * self.mean:.1f} ± {sd} (n={self.n}) [{100 * self.low:.1f}, {100 * self.high:.1f}]"

    def to_json(self) -> dict[str, Any]:
        out = {"mean": round(self.mean, 4), "n": self.n, "ci": [round(self.low, 4), round(self.high, 4)],
               "examples": self.examples}
        return out if self.sd is None else {**out, "sd": round(self.sd, 4)}


def auc_cell(per_seed: Sequence[Sequence[float]], labels: Sequence[bool], resamples: int = RESAMPLES) -> AUCCell:
    """The cell of one method at one size from each seed's P(Yes) on the same test samples."""
    if not per_seed:
        raise ValueError("a cell needs at least one seed")
    scores = np.asarray([list(values) for values in per_seed], dtype=np.float64)
    seeds = _aucs(scores, np.asarray(labels, dtype=bool))
    averaged = resampled_aucs(scores, labels, resamples).mean(axis=1)
    alpha = (1 - CONFIDENCE) / 2
    low, high = np.quantile(averaged, [alpha, 1 - alpha])
    return AUCCell(float(seeds.mean()), statistics.stdev(seeds.tolist()) if len(seeds) > 1 else None, len(seeds),
                   float(low), float(high), scores.shape[1], tuple(averaged.tolist()))


def paired_auc_p(a: AUCCell, b: AUCCell) -> float:
    """Two-sided p of "a and b have the same AUC" on the same samples and resamples: the resampled
    differences shifted by the observed one (the null); p = (1 + #|centred| >= |observed|) / (1 + resamples)."""
    if a.examples != b.examples or len(a.resampled) != len(b.resampled):
        raise ValueError(f"cannot pair cells over {a.examples} and {b.examples} samples")
    differences = np.asarray(a.resampled) - np.asarray(b.resampled)
    observed = a.mean - b.mean
    extreme = np.abs(differences - observed) >= abs(observed) - 1e-12
    return float((1 + extreme.sum()) / (1 + differences.size))

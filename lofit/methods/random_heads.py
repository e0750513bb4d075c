"""Head rankings that do not come from LoFiT step 1, in step 1's `heads.json` format.

Two step-2 ablations train LoFiT offsets on heads chosen another way:
- random heads: K heads drawn uniformly without replacement with a seed;
- ITI heads: heads ranked by the validation accuracy of ITI's linear probes.
Both are written as `lofit.training.heads.HeadRanking` files, so `BiasTuningModule` (and
`lofit tune`) consume them unchanged through `TuningConfig.heads`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lofit.families import HeadGeometry
from lofit.training.heads import HeadRanking, resolve_top_k, write_heads

RANDOM_TASK = "random"
ITI_TASK = "iti-probes"


def random_ranking(
    model: str, geometry: HeadGeometry, top_k: int | float, seed: int = 42, task: str | None = None
) -> HeadRanking:
    """K heads chosen uniformly at random (seeded); they get scores K/K, (K-1)/K, ..., 1/K in draw order.

    Every other head scores 0, so `top(K)` returns exactly the drawn heads (in draw order), and
    step 2 must be run with the same `top_k` (a larger one would add zero-score heads in
    (layer, head) order, which are not random). `top_k` is a count or a fraction of all heads.
    """
    total = geometry.num_total_heads
    k = resolve_top_k(top_k, total)
    drawn = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:k].tolist()
    scores = [[0.0] * geometry.num_heads for _ in range(geometry.num_layers)]
    for rank, flat in enumerate(drawn):
        layer, head = divmod(flat, geometry.num_heads)
        scores[layer][head] = (k - rank) / k
    return HeadRanking(model=model, geometry=geometry, scores=scores, task=task or f"{RANDOM_TASK}-seed{seed}-k{k}")


def write_random_heads(
    path: str | Path, model: str, geometry: HeadGeometry, top_k: int | float, seed: int = 42
) -> Path:
    """Write `random_ranking(...)` as a heads file; returns the path."""
    return write_heads(path, random_ranking(model, geometry, top_k, seed))


def iti_ranking(
    probe_accuracies: torch.Tensor, model: str, geometry: HeadGeometry, task: str | None = None
) -> HeadRanking:
    """ITI's head ranking (validation accuracy of each head's probe, layers × heads) as a heads file.

    `HeadRanking.ranked` breaks ties in (layer, head) order, the same rule `lofit.methods.iti`
    uses to pick its top-K heads, so `top(K)` of this ranking is exactly ITI's head set.
    """
    expected = (geometry.num_layers, geometry.num_heads)
    if tuple(probe_accuracies.shape) != expected:
        raise ValueError(f"probe accuracies have shape {tuple(probe_accuracies.shape)}, the model's heads are {expected}")
    if not torch.isfinite(probe_accuracies).all():
        raise ValueError("probe accuracies contain NaN or infinite values")
    scores = probe_accuracies.detach().double().cpu().tolist()
    return HeadRanking(model=model, geometry=geometry, scores=scores, task=task or ITI_TASK)


def write_iti_heads(
    path: str | Path, probe_accuracies: torch.Tensor, model: str, geometry: HeadGeometry, task: str | None = None
) -> Path:
    """Write `iti_ranking(...)` as a heads file; returns the path."""
    return write_heads(path, iti_ranking(probe_accuracies, model, geometry, task))

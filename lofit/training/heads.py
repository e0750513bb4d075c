"""The step-1 product: a ranking of every attention head, as JSON plus a heat map.

The file records the model and its geometry so step 2 can refuse heads selected on another
model, and the full layers × heads score matrix so plots and ablations need no retraining.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from lofit.families import HeadGeometry
from lofit.intervention import Head
from lofit.io import atomic_path, read_json, write_json
from lofit.errors import ConfigError

HEADS_FORMAT = "lofit-heads"
HEADS_VERSION = 1


@dataclass(frozen=True)
class HeadRanking:
    """Scores (‖A_{l,i}‖₂) of all heads of one model, with where they came from."""

    model: str
    geometry: HeadGeometry
    scores: list[list[float]]  # layers × heads
    task: str | None = None

    @classmethod
    def from_scale(
        cls, scale: torch.Tensor, model: str, geometry: HeadGeometry, task: str | None = None
    ) -> HeadRanking:
        """Score each head by the L2 norm of its trained scale vector (layers × heads × head_dim)."""
        norms = scale.detach().float().norm(dim=-1).cpu()
        return cls(model=model, geometry=geometry, scores=norms.tolist(), task=task)

    def ranked(self) -> list[tuple[Head, float]]:
        """All heads, highest score first; ties keep (layer, head) order."""
        flat = [((layer, head), score) for layer, row in enumerate(self.scores) for head, score in enumerate(row)]
        return sorted(flat, key=lambda item: -item[1])

    def top(self, k: int) -> list[tuple[Head, float]]:
        return self.ranked()[:k]

    def to_json(self) -> dict:
        return {
            "format": HEADS_FORMAT,
            "version": HEADS_VERSION,
            "model": self.model,
            "task": self.task,
            "geometry": {
                "num_layers": self.geometry.num_layers,
                "num_heads": self.geometry.num_heads,
                "head_dim": self.geometry.head_dim,
            },
            "heads": [{"layer": l, "head": h, "score": s} for (l, h), s in self.ranked()],
            "scores": self.scores,
        }

    @classmethod
    def from_json(cls, data: dict, source: str = "heads file") -> HeadRanking:
        if data.get("format") != HEADS_FORMAT or data.get("version") != HEADS_VERSION:
            raise ConfigError(f"{source} is not a {HEADS_FORMAT} v{HEADS_VERSION} file (written by `lofit select`)")
        geometry = HeadGeometry(**data["geometry"])
        scores = data["scores"]
        if len(scores) != geometry.num_layers or any(len(row) != geometry.num_heads for row in scores):
            raise ConfigError(f"{source}: score matrix does not match its geometry {geometry}")
        return cls(model=data["model"], geometry=geometry, scores=scores, task=data.get("task"))


def resolve_top_k(top_k: int | float, total: int, name: str = "top_k", unit: str = "heads") -> int:
    """K as a count: an int is taken as is, a float in (0, 1] is a fraction of all `total` units."""
    if isinstance(top_k, float):
        if not 0 < top_k <= 1:
            raise ConfigError(f"a fractional {name} must be in (0, 1], got {top_k}")
        return max(1, round(top_k * total))
    if not 0 < top_k <= total:
        raise ConfigError(f"{name}={top_k} but the model has {total} {unit}")
    return top_k


def write_heads(path: str | Path, ranking: HeadRanking) -> Path:
    write_json(path, ranking.to_json())
    return Path(path)


def read_heads(path: str | Path, model: str, geometry: HeadGeometry) -> HeadRanking:
    """Load a ranking and check it belongs to a model of this geometry (else a one-line error)."""
    ranking = HeadRanking.from_json(read_json(path), source=str(path))
    if ranking.geometry != geometry:
        g, r = geometry, ranking.geometry
        raise ConfigError(
            f"{path} ranks heads of '{ranking.model}' ({r.num_layers} layers × {r.num_heads} heads × "
            f"{r.head_dim}), but the backbone '{model}' has {g.num_layers} × {g.num_heads} × {g.head_dim}"
        )
    if ranking.model != model:
        message = f"{path} was selected on '{ranking.model}'; using it with '{model}' (same geometry)"
        warnings.warn(message, stacklevel=2)
    return ranking


def choose_heads(path: str | Path, top_k: int | float, model: str, geometry: HeadGeometry) -> list[tuple[Head, float]]:
    """Step 2's heads: the top K of the ranking in `path` (checked against `geometry`), with their scores.

    The one place where a heads file and `top_k` become K heads; the CLI calls it once, before
    the backbone loads, and hands the result to `BiasTuningModule`.
    """
    ranking = read_heads(path, model, geometry)
    return ranking.top(resolve_top_k(top_k, geometry.num_total_heads))


def write_heatmap(path: str | Path, ranking: HeadRanking, title: str | None = None) -> Path:
    """Layers × heads image of the scores (matplotlib Agg, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = ranking.geometry
    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * g.num_heads + 2), max(3.0, 0.25 * g.num_layers + 1.5)))
    image = ax.imshow(ranking.scores, aspect="auto", origin="lower", cmap="viridis", interpolation="nearest")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    source = ranking.model + (f"\n{ranking.task}" if ranking.task else "")
    ax.set_title(title or f"‖A‖₂ per head\n{source}", fontsize=9)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return Path(path)

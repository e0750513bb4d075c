"""The LoFiT intervention: per-head scale A and offset v on the input of every layer's `o_proj`.

`z ← (1 + A) ⊙ z + v` is applied to each head's output (the `o_proj` input viewed as
heads × head_dim) at every position, by one forward pre-hook per layer that treats all heads of
the layer in a single vectorised operation. Because it hooks `o_proj` rather than the attention
code, it works for eager, sdpa and flash attention alike and needs no forked modeling file.

Heads outside the chosen set are masked: their entries are zero and receive zero gradient, so an
optimizer without weight decay leaves them exactly zero. Layers with no chosen head get no hook at
all, so the backward pass stops at the lowest layer that holds a trainable head.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from lofit.families import FamilySpec, HeadGeometry, family_for, o_projections
from lofit.hooks import HookedEdit

Component = Literal["scale", "offset"]
COMPONENTS: tuple[Component, ...] = ("scale", "offset")
Head = tuple[int, int]


def all_heads(geometry: HeadGeometry) -> list[Head]:
    return [(layer, head) for layer in range(geometry.num_layers) for head in range(geometry.num_heads)]


def validate_heads(heads: Iterable[Sequence[int]], geometry: HeadGeometry) -> list[Head]:
    """Heads as (layer, head) tuples, each in range and listed once, order kept."""
    result: list[Head] = []
    for item in heads:
        if len(item) != 2:
            raise ValueError(f"a head must be a (layer, head) pair, got {item!r}")
        layer, head = int(item[0]), int(item[1])
        if not (0 <= layer < geometry.num_layers and 0 <= head < geometry.num_heads):
            raise ValueError(
                f"head ({layer}, {head}) is outside the model's {geometry.num_layers} layers × "
                f"{geometry.num_heads} heads"
            )
        result.append((layer, head))
    if len(set(result)) != len(result):
        raise ValueError("the head list names a head more than once")
    return result


class HeadIntervention(HookedEdit, nn.Module):
    """Trainable per-head scale and/or offset for the chosen heads of a frozen model.

    Args:
        geometry: layers × heads × head_dim of the model the intervention belongs to.
        components: which vectors exist: `scale` (A, step 1), `offset` (v, step 2), or both.
        heads: the (layer, head) pairs that may be non-zero, most important first; all heads if None.
        init_std: standard deviation of the N(0, σ) initialisation of the chosen heads; 0 gives
            an intervention that leaves the model unchanged.
        generator: random generator for a reproducible initialisation.
    """

    def __init__(
        self,
        geometry: HeadGeometry,
        components: Sequence[Component] = ("offset",),
        heads: Iterable[Sequence[int]] | None = None,
        init_std: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        unknown = set(components) - set(COMPONENTS)
        if unknown or not components:
            raise ValueError(f"components must be a non-empty subset of {COMPONENTS}, got {components}")
        self.geometry = geometry
        self.components: tuple[Component, ...] = tuple(c for c in COMPONENTS if c in components)
        self.heads: list[Head] = validate_heads(all_heads(geometry) if heads is None else heads, geometry)
        if not self.heads:
            raise ValueError("an intervention needs at least one head")
        mask = torch.zeros(geometry.num_layers, geometry.num_heads, 1)
        for layer, head in self.heads:
            mask[layer, head] = 1.0
        self.register_buffer("head_mask", mask, persistent=False)
        shape = (geometry.num_layers, geometry.num_heads, geometry.head_dim)
        self.scale = nn.Parameter(torch.zeros(shape)) if "scale" in self.components else None
        self.offset = nn.Parameter(torch.zeros(shape)) if "offset" in self.components else None
        self._init_hooks()
        self.reset_parameters(init_std, generator)

    # ----------------------------------------------------------------- parameters
    def reset_parameters(self, std: float = 0.0, generator: torch.Generator | None = None) -> None:
        """N(0, std) on the chosen heads, exact zeros elsewhere."""
        with torch.no_grad():
            for param in self.vectors().values():
                noise = torch.randn(param.shape, generator=generator, dtype=param.dtype) * std
                param.copy_(noise.to(param.device) * self.head_mask.to(param.device))

    def vectors(self) -> dict[str, nn.Parameter]:
        """The existing component parameters by name."""
        return {name: getattr(self, name) for name in self.components}

    def masked(self, name: Component) -> torch.Tensor:
        """A component with every unchosen head forced to zero (and given zero gradient)."""
        return getattr(self, name) * self.head_mask

    @property
    def num_trainable(self) -> int:
        """Parameters that can move: chosen heads × head_dim × components."""
        return len(self.heads) * self.geometry.head_dim * len(self.components)

    @property
    def active_layers(self) -> list[int]:
        return sorted({layer for layer, _ in self.heads})

    def head_rows(self, name: Component) -> torch.Tensor:
        """The component's vectors of the chosen heads, shape (K, head_dim), in head order."""
        param = getattr(self, name)
        layers = torch.tensor([layer for layer, _ in self.heads])
        heads = torch.tensor([head for _, head in self.heads])
        return param.detach()[layers, heads]

    def load_head_rows(self, name: Component, rows: torch.Tensor) -> None:
        """Inverse of `head_rows`: write (K, head_dim) vectors into the chosen heads."""
        expected = (len(self.heads), self.geometry.head_dim)
        if tuple(rows.shape) != expected:
            raise ValueError(f"'{name}' has shape {tuple(rows.shape)}, expected {expected}")
        param = getattr(self, name)
        layers = torch.tensor([layer for layer, _ in self.heads])
        heads = torch.tensor([head for _, head in self.heads])
        with torch.no_grad():
            param.zero_()
            param[layers, heads] = rows.to(param.dtype).to(param.device)

    # ----------------------------------------------------------------- hooks
    def _hook(self, layer: int):
        num_heads, head_dim = self.geometry.num_heads, self.geometry.head_dim

        def pre_hook(_module: nn.Module, args: tuple) -> tuple | None:
            if not self.enabled:
                return None
            z = args[0]
            heads = z.view(*z.shape[:-1], num_heads, head_dim)
            mask = self.head_mask[layer].to(z.dtype)
            if self.scale is not None:
                heads = heads * (1 + self.scale[layer].to(z.dtype) * mask)
            if self.offset is not None:
                heads = heads + self.offset[layer].to(z.dtype) * mask
            return (heads.reshape(z.shape), *args[1:])

        return pre_hook

    def _register(self, model: nn.Module, family: FamilySpec | None) -> list[RemovableHandle]:
        """Hook the `o_proj` of every layer that holds a chosen head."""
        projections = o_projections(model, family or family_for(model.config.model_type))
        if len(projections) != self.geometry.num_layers:
            raise ValueError(
                f"intervention has {self.geometry.num_layers} layers, the model {len(projections)}"
            )
        return [projections[layer].register_forward_pre_hook(self._hook(layer)) for layer in self.active_layers]

    def extra_repr(self) -> str:
        return f"components={self.components}, heads={len(self.heads)}, geometry={self.geometry}"

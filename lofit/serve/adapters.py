"""Which models a server answers for, and the one hook that serves many LoFiT adapters at once.

A LoFiT adapter is a per-head scale and offset on every layer's `o_proj` input, a few KB. All the
loaded adapters are stacked into one tensor with a zero entry (index 0) for the base model; a
forward pre-hook on each `o_proj` gathers every batch row's entry by its adapter index, so the
rows of one batch may each use a different adapter (or none) at the cost of one gather per layer.
The arithmetic is that of `lofit.intervention.HeadIntervention` (`(1 + A) ⊙ z + v`, zeros where a
head is not chosen), so a row's output equals its adapter applied alone.

Other methods (LoRA, RED, RepE) change the model itself: such an edit is attached for good and
served alone, one per process.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from lofit.backbone import Backbone
from lofit.data.prompt_format import PromptFormat
from lofit.families import o_projections
from lofit.intervention import HeadIntervention


class AdapterStack:
    """Scales and offsets of several LoFiT adapters, selected per batch row by `rows`."""

    def __init__(self, interventions: list[HeadIntervention], device: torch.device) -> None:
        geometry = interventions[0].geometry
        shape = (len(interventions) + 1, geometry.num_layers, geometry.num_heads, geometry.head_dim)
        self.geometry = geometry
        self.scale = torch.zeros(shape, device=device) if any(i.scale is not None for i in interventions) else None
        self.offset = torch.zeros(shape, device=device) if any(i.offset is not None for i in interventions) else None
        with torch.no_grad():
            for index, intervention in enumerate(interventions, start=1):
                for name, target in (("scale", self.scale), ("offset", self.offset)):
                    if getattr(intervention, name) is not None:
                        target[index] = intervention.masked(name).detach().to(device)
        self.layers = sorted({layer for i in interventions for layer in i.active_layers})
        self.rows = torch.zeros(1, dtype=torch.long, device=device)
        self._handles: list[RemovableHandle] = []

    def select(self, rows: list[int]) -> None:
        """Set the adapter index of each row of the next forward pass (0: base model)."""
        self.rows = torch.tensor(rows, dtype=torch.long, device=self.rows.device)

    def _hook(self, layer: int):
        num_heads, head_dim = self.geometry.num_heads, self.geometry.head_dim

        def pre_hook(_module: nn.Module, args: tuple) -> tuple:
            z = args[0]
            heads = z.view(*z.shape[:-1], num_heads, head_dim)
            if self.scale is not None:
                heads = heads * (1 + self.scale[self.rows, layer].to(z.dtype)[:, None])
            if self.offset is not None:
                heads = heads + self.offset[self.rows, layer].to(z.dtype)[:, None]
            return (heads.reshape(z.shape), *args[1:])

        return pre_hook

    def attach(self, backbone: Backbone) -> None:
        projections = o_projections(backbone.model, backbone.family)
        self._handles = [projections[layer].register_forward_pre_hook(self._hook(layer)) for layer in self.layers]

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


@dataclass
class ServedModels:
    """Model ids clients may request, each with its row index into the stack (0: no adapter) and
    the prompt format its adapter was trained with (absent: plain prompts)."""

    ids: dict[str, int]
    paths: dict[str, str | None]
    stack: AdapterStack | None = None
    formats: dict[str, PromptFormat] = field(default_factory=dict)

    def index(self, model_id: str) -> int | None:
        return self.ids.get(model_id)

    def prompt_format(self, model_id: str) -> PromptFormat:
        return self.formats.get(model_id, PromptFormat())


def serve_models(backbone: Backbone, adapters: Mapping[str, str], base_id: str | None) -> ServedModels:
    """Load the named edit folders onto `backbone` and say which model id selects what.

    LoFiT (and ITI) adapters go into one `AdapterStack` beside the base model (`base_id`), each
    with the prompt format its config recorded (checked against the tokenizer here). Any
    other method's edit is attached to the model for good, so it must be the only one, and the
    plain base model is then not served.
    """
    from lofit.adapter import load_adapter, read_adapter_config
    from lofit.methods.loading import edit_method, load_edit

    methods = {name: edit_method(path) for name, path in adapters.items()}
    others = {name: method for name, method in methods.items() if method != "lofit"}
    if others and len(adapters) > 1:
        name, method = next(iter(others.items()))
        raise ValueError(
            f"adapter '{name}' ({adapters[name]}) is a {method} edit, which changes the model itself: "
            "serve it alone, one per process (only LoFiT adapters can share a server)"
        )
    if others:
        (name, path), = adapters.items()
        load_edit(path, backbone).attach(backbone.model, backbone.family)
        return ServedModels({name: 0}, {name: path})
    ids: dict[str, int] = {} if base_id is None else {base_id: 0}
    paths: dict[str, str | None] = {} if base_id is None else {base_id: None}
    if not adapters:
        return ServedModels(ids, paths)
    formats = {name: read_adapter_config(path).prompt for name, path in adapters.items()}
    for name, prompt_format in formats.items():
        try:
            prompt_format.check(backbone.tokenizer, backbone.name)
        except ValueError as err:
            raise ValueError(f"adapter '{name}' ({adapters[name]}) was trained with a chat template: {err}") from None
    interventions = [load_adapter(path, backbone) for path in adapters.values()]
    stack = AdapterStack(interventions, next(backbone.model.parameters()).device)
    stack.attach(backbone)
    for index, (name, path) in enumerate(adapters.items(), start=1):
        ids[name], paths[name] = index, path
    return ServedModels(ids, paths, stack, formats)

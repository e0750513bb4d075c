"""One declarative entry per model family: where the decoder layers and `o_proj` live.

Adding an architecture is one `FamilySpec` in `FAMILIES`; nothing else in lofit knows about
model internals. Head count and head size are read from the model config (Gemma 3 has
`head_dim` different from hidden_size / num_heads, so `config.head_dim` wins when present).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class FamilySpec:
    """Where the intervention site is in one family of Hugging Face causal LMs."""

    name: str
    model_types: tuple[str, ...]
    layers_paths: tuple[str, ...] = ("model.layers",)
    o_proj_path: str = "self_attn.o_proj"
    needs_bos: bool = False
    """Prepend the tokenizer's BOS to every sequence (Gemma is trained with `<bos>` always)."""
    export_model_type: str | None = None
    """Architecture of an exported merged model; None keeps the model's own (its config takes
    `attention_bias`). Qwen2 and Mistral hard-code `o_proj` without bias, so their merged form is
    saved as the bias-capable Llama layout, which is the same network without a sliding window."""


FAMILIES: dict[str, FamilySpec] = {
    spec.name: spec
    for spec in (
        FamilySpec("llama", ("llama",)),
        FamilySpec("qwen2", ("qwen2",), export_model_type="llama"),
        FamilySpec("qwen3", ("qwen3",)),
        FamilySpec("mistral", ("mistral",), export_model_type="llama"),
        FamilySpec("gemma", ("gemma",), needs_bos=True),
        FamilySpec(
            "gemma3",
            ("gemma3_text", "gemma3"),
            layers_paths=("model.layers", "model.language_model.layers"),
            needs_bos=True,
        ),
    )
}


class UnsupportedArchitectureError(ValueError):
    """Raised for a model type with no `FamilySpec`."""


def family_for(model_type: str) -> FamilySpec:
    """The family spec for a config's `model_type`, or a clear error saying how to add one."""
    for spec in FAMILIES.values():
        if model_type in spec.model_types:
            return spec
    known = ", ".join(sorted(t for s in FAMILIES.values() for t in s.model_types))
    raise UnsupportedArchitectureError(
        f"model_type '{model_type}' has no LoFiT family entry (known: {known}); add a "
        "FamilySpec(name, model_types=(...), layers_paths=(...), o_proj_path=...) to "
        "lofit/families.py:FAMILIES"
    )


def _get(root: nn.Module, dotted: str) -> nn.Module | None:
    module: nn.Module | None = root
    for part in dotted.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


@dataclass(frozen=True)
class HeadGeometry:
    """Shape of the intervention site: layers × heads × head_dim."""

    num_layers: int
    num_heads: int
    head_dim: int

    @property
    def num_total_heads(self) -> int:
        return self.num_layers * self.num_heads


def text_config(config):
    """The text part of a (possibly multimodal) config."""
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def head_geometry(config) -> HeadGeometry:
    """Layers, attention heads and head size from a Hugging Face config."""
    cfg = text_config(config)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return HeadGeometry(cfg.num_hidden_layers, cfg.num_attention_heads, head_dim)


def decoder_layers(model: nn.Module, spec: FamilySpec) -> list[nn.Module]:
    """The model's decoder layers, found through the family's layer paths."""
    for path in spec.layers_paths:
        layers = _get(model, path)
        if layers is not None:
            return list(layers)
    raise UnsupportedArchitectureError(
        f"none of the layer paths {spec.layers_paths} of family '{spec.name}' exists on "
        f"{type(model).__name__}; fix layers_paths in lofit/families.py"
    )


def o_projections(model: nn.Module, spec: FamilySpec | None = None) -> list[nn.Module]:
    """Every layer's attention output projection, in layer order."""
    spec = spec or family_for(model.config.model_type)
    projections = []
    for index, layer in enumerate(decoder_layers(model, spec)):
        proj = _get(layer, spec.o_proj_path)
        if proj is None:
            raise UnsupportedArchitectureError(
                f"layer {index} of {type(model).__name__} has no '{spec.o_proj_path}' "
                f"(family '{spec.name}'); fix o_proj_path in lofit/families.py"
            )
        projections.append(proj)
    return projections

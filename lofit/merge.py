"""Fold a trained intervention into the model's weights, and export a plain Hugging Face folder.

`o_proj((1 + A) ⊙ z + v) = (W_o · diag(1 + A)) z + W_o v`: the offsets become an `o_proj` bias
`W_o v` (exact, also on a bitsandbytes-quantized `o_proj`, whose bias stays unquantized) and the
scales, when present, rescale `W_o`'s input columns (only on unquantized weights).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from lofit.families import FamilySpec, family_for, o_projections
from lofit.intervention import HeadIntervention
from lofit.io import atomic_dir
from lofit.quantized import is_quantized


def _input_dtype(linear: nn.Module) -> torch.dtype:
    if getattr(linear, "compute_dtype", None) is not None:
        return linear.compute_dtype
    return linear.weight.dtype if linear.weight.is_floating_point() else torch.float32


def _weight_times(linear: nn.Module, vector: torch.Tensor) -> torch.Tensor:
    """`W · vector` computed by the layer's own kernel, so quantized storage is read exactly as
    the forward pass reads it (no dequantize-and-guess)."""
    bias, linear.bias = linear.bias, None
    try:
        return linear(vector.to(_input_dtype(linear)).unsqueeze(0)).squeeze(0).float()
    finally:
        linear.bias = bias


def merge_into(model: nn.Module, intervention: HeadIntervention, family: FamilySpec | None = None) -> None:
    """Fold `intervention` into `model` in place; the intervention must be detached afterwards."""
    if intervention.attached:
        raise RuntimeError("detach the intervention before merging it, or it would apply twice")
    family = family or family_for(model.config.model_type)
    projections = o_projections(model, family)
    for layer in intervention.active_layers:
        proj = projections[layer]
        device = proj.weight.device
        with torch.no_grad():
            bias_delta = None
            if intervention.offset is not None:
                bias_delta = _weight_times(proj, intervention.masked("offset")[layer].reshape(-1).to(device))
            if intervention.scale is not None:
                if is_quantized(proj):
                    raise ValueError(
                        "scales cannot be folded into a quantized o_proj; merge offsets only "
                        "or load the backbone unquantized"
                    )
                factor = 1 + intervention.masked("scale")[layer].reshape(-1).to(device, torch.float32)
                proj.weight.mul_(factor.to(proj.weight.dtype))
            if bias_delta is not None:
                if proj.bias is None:
                    dtype = torch.float32 if is_quantized(proj) else proj.weight.dtype
                    zeros = torch.zeros(proj.out_features, dtype=dtype, device=device)
                    proj.bias = nn.Parameter(zeros, requires_grad=False)
                proj.bias.add_(bias_delta.to(proj.bias.dtype))


def _export_config(config, family: FamilySpec):
    """The config of the merged model: the family's own with `attention_bias`, or Llama's."""
    data = config.to_dict()
    data["attention_bias"] = True
    data.pop("quantization_config", None)
    target = family.export_model_type or config.model_type
    if target != config.model_type:
        if data.get("sliding_window") and data.get("use_sliding_window", True):
            window, max_len = data["sliding_window"], data.get("max_position_embeddings", 0)
            if window < max_len:
                raise ValueError(
                    f"{config.model_type} with a {window}-token sliding window has no bias-capable "
                    "equivalent in transformers; merge in memory with merge_into instead"
                )
        for key in ("model_type", "architectures", "sliding_window", "use_sliding_window", "layer_types", "max_window_layers"):
            data.pop(key, None)
    return AutoConfig.for_model(target, **{k: v for k, v in data.items() if k != "model_type"})


def export_merged(
    model: nn.Module,
    tokenizer,
    intervention: HeadIntervention,
    out_dir: str | Path,
) -> Path:
    """Write a standard Hugging Face folder holding `model` with `intervention` folded in.

    The folder loads with plain `transformers` (no lofit import) and gives the hooked model's
    logits. `model` must be unquantized; it is left unchanged (a merged copy is written).
    """
    family = family_for(model.config.model_type)
    if any(is_quantized(p) for p in o_projections(model, family)):
        raise ValueError("export needs an unquantized backbone; load it with quantization='none'")
    config = _export_config(model.config, family)
    dtype = next(model.parameters()).dtype
    merged = AutoModelForCausalLM.from_config(config, dtype=dtype)
    state = dict(model.state_dict())
    target_state = merged.state_dict()
    for name, tensor in target_state.items():  # biases the source family lacks start at zero
        if name not in state and name.endswith(".bias"):
            state[name] = torch.zeros_like(tensor)
    merged.load_state_dict(state, strict=True)
    merge_into(merged, intervention, family_for(config.model_type))
    with atomic_dir(out_dir) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return Path(out_dir)

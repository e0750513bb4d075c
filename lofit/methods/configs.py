"""Training settings of the trained baselines (LoRA, RED), apart from their torch code.

The `lofit lora|red` signatures use these dataclasses as their YAML schema, so they live in a
module that imports neither torch nor peft: the CLI builds its parser without loading either.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

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

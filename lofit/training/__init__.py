"""The two LoFiT steps as Lightning modules: head selection (A) and bias tuning (v).

The settings (`lofit.training.config`) import without torch or Lightning, so the CLI parses and
answers `--help` fast; the modules load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from lofit.errors import ConfigError
from lofit.training.config import (
    DataConfig,
    SelectionConfig,
    TaskSpec,
    TrainerConfig,
    TuningConfig,
    ValidationConfig,
)

_LAZY = {
    "LoFiTDataModule": "lofit.training.datamodule",
    "HeadSelectionModule": "lofit.training.selection",
    "BiasTuningModule": "lofit.training.tuning",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lofit.training' has no attribute {name!r}")


__all__ = [
    "BiasTuningModule",
    "ConfigError",
    "DataConfig",
    "HeadSelectionModule",
    "LoFiTDataModule",
    "SelectionConfig",
    "TaskSpec",
    "TrainerConfig",
    "TuningConfig",
    "ValidationConfig",
]

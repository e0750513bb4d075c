"""The two LoFiT steps as Lightning modules: head selection (A) and bias tuning (v)."""

from lofit.training.config import (
    ConfigError,
    DataConfig,
    SelectionConfig,
    TaskSpec,
    TrainerConfig,
    TuningConfig,
    ValidationConfig,
)
from lofit.training.datamodule import LoFiTDataModule
from lofit.training.selection import HeadSelectionModule
from lofit.training.tuning import BiasTuningModule

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

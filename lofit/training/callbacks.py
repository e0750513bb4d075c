"""Callbacks of a LoFiT run: the task metric on the validation split, and `metrics.json`."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import torch

from lofit.io import write_json
from lofit.tasks.base import Task
from lofit.training.config import ValidationConfig


class TaskMetricCallback(L.Callback):
    """Logs `val/task/<metric>` from `task.evaluate` on the val split after each validation pass.

    Every rank evaluates the same (limited) examples, so the logged value is identical on all
    ranks and can drive `keep: best` without a collective.
    """

    def __init__(self, task: Task, config: ValidationConfig) -> None:
        self.task = task
        self.config = config

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        with torch.no_grad():
            metrics = self.task.evaluate(
                pl_module.backbone, split="val", limit=self.config.limit, batch_size=self.config.batch_size
            )
        for name, value in metrics.items():
            if isinstance(value, (int, float)):
                pl_module.log(f"val/task/{name}", float(value), on_epoch=True, sync_dist=False)


class MetricsJsonCallback(L.Callback):
    """Writes the final logged metrics of a fit to one JSON file (rank 0), for DVC `metrics:`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.started = 0.0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = time.monotonic()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics = {
            name: float(value)
            for name, value in sorted(trainer.callback_metrics.items())
            if (torch.is_tensor(value) and value.numel() == 1) or isinstance(value, (int, float))
        }
        write_json(
            self.path,
            {
                "epochs": trainer.current_epoch,
                "global_step": trainer.global_step,
                "world_size": trainer.world_size,
                "trainable_parameters": pl_module.intervention.num_trainable,
                "fit_seconds": round(time.monotonic() - self.started, 3),
                **metrics,
            },
        )

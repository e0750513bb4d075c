"""Callbacks of a LoFiT run: the task metric on the validation split, `metrics.json`, the best
weights as safetensors, a summary of the parameters that move, and per-epoch lines for log files."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, ModelSummary, ProgressBar
from lightning.pytorch.utilities import model_summary as summary
from safetensors.torch import save_file

from lofit.io import atomic_path, write_json
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


class BestWeightsCheckpoint(ModelCheckpoint):
    """The `keep: best` checkpoint that also writes the new best weights as safetensors (rank 0).

    `weights_path` is fixed here, from the run directory, and is not part of the callback's
    checkpoint state: `InterventionModule.load_best` reads only that file, so a resumed checkpoint
    can never point the product at another file (let alone a pickle).
    """

    def __init__(self, weights_path: str | Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.weights_path = Path(weights_path)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        if trainer.ckpt_path is None and trainer.is_global_zero:
            self.weights_path.unlink(missing_ok=True)  # a fresh run must not inherit an old run's best

    def _update_best_and_save(self, current: torch.Tensor, trainer: L.Trainer, monitor_candidates: dict) -> None:
        # Lightning calls this exactly when `current` enters the top-k (k = 1: a new best).
        super()._update_best_and_save(current, trainer, monitor_candidates)
        if trainer.is_global_zero:
            weights = trainer.lightning_module.state_dict()
            state = {name: value.detach().cpu().clone().contiguous() for name, value in weights.items()}
            with atomic_path(self.weights_path) as tmp:
                save_file(state, str(tmp))


def movable_parameters(module: torch.nn.Module) -> int:
    """Values the optimizer can change: an edit's own count (masked heads excluded), else requires_grad numel."""
    count = getattr(module, "num_trainable", None)
    if isinstance(count, int):
        return count
    return sum(param.numel() for param in module.parameters() if param.requires_grad)


class _MovableParameterTable(summary.ModelSummary):
    """Lightning's summary table with every count replaced by `movable_parameters`."""

    @property
    def param_nums(self) -> list[int]:
        return [movable_parameters(layer._module) for layer in self._layer_summary.values()]

    @property
    def total_parameters(self) -> int:
        return movable_parameters(self._model)

    @property
    def trainable_parameters(self) -> int:
        return movable_parameters(self._model)


class MovableParameterSummary(ModelSummary):
    """The model summary at fit start, counting the parameters that can move (1,728 at K=27, not 17.3 K)."""

    def _summary(self, trainer: L.Trainer, pl_module: L.LightningModule) -> summary.ModelSummary:
        return _MovableParameterTable(pl_module, max_depth=self._max_depth)


class EpochSummaryLines(ProgressBar):
    """One plain line per epoch (epoch, train/loss, val/loss) for logs that are not a terminal."""

    METRICS = ("train/loss_epoch", "val/loss")

    def __init__(self) -> None:
        super().__init__()
        self.enabled = True

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not (self.enabled and trainer.is_global_zero):
            return
        metrics = trainer.callback_metrics
        shown = [name for name in self.METRICS if name in metrics]
        values = [f"{name.removesuffix('_epoch')} {float(metrics[name]):.4f}" for name in shown]
        total = "" if trainer.max_epochs in (None, -1) else f"/{trainer.max_epochs}"
        print(f"epoch {trainer.current_epoch + 1}{total}: " + ", ".join(values), file=sys.stderr, flush=True)

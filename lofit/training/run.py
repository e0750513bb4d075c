"""Assemble and run one training step: task, backbone, module, data, Trainer, callbacks.

Everything that can be wrong in a config is checked before `Trainer.fit` starts. Output layout
of a run directory:
    heads.json, heads.png  (step 1)     adapter/  (step 2)
    metrics.json           final metrics       checkpoints/last.ckpt   intervention-only checkpoints
    logs/metrics.csv       per-step CSV log
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from lofit.backbone import Backbone, BackboneConfig, load_backbone
from lofit.data.examples import LossKind
from lofit.io import read_json
from lofit.tasks.base import Task
from lofit.training.callbacks import MetricsJsonCallback, TaskMetricCallback
from lofit.training.config import ConfigError, DataConfig, StepConfig, TaskSpec, TrainerConfig, ValidationConfig
from lofit.training.datamodule import LoFiTDataModule
from lofit.training.module import InterventionModule

METRICS_FILE = "metrics.json"
CHECKPOINT_DIR = "checkpoints"


def build_task(spec: TaskSpec) -> Task:
    """A registered task by name, or a Task subclass by import path `module:Class`."""
    if ":" in spec.name:
        module_name, _, class_name = spec.name.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as err:
            raise ConfigError(f"cannot import task class '{spec.name}': {err}") from None
        if not (isinstance(cls, type) and issubclass(cls, Task)):
            raise ConfigError(f"'{spec.name}' is not a lofit Task subclass")
        return cls(**spec.options)
    from lofit.tasks import get_task

    try:
        return get_task(spec.name, data_dir=spec.data_dir, **spec.options)
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err)) from None


def training_loss(task: Task) -> LossKind:
    """The task's loss, or a clear error for evaluation-only tasks."""
    if task.loss not in ("sft", "dpo"):
        raise ConfigError(f"task '{task.name}' is evaluation-only (no training loss)")
    return task.loss


def process_device(cfg: BackboneConfig) -> BackboneConfig:
    """Under multi-GPU DDP every process loads the backbone on its own GPU (LOCAL_RANK)."""
    if cfg.device == "cuda" and torch.cuda.is_available():
        return replace(cfg, device=f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return cfg


def check_resume(ckpt_path: str | None) -> None:
    if ckpt_path is not None and ckpt_path not in ("last", "best") and not Path(ckpt_path).is_file():
        raise ConfigError(f"ckpt_path {ckpt_path}: file not found")


def check_heads_file(path: str, backbone: BackboneConfig) -> None:
    """Fail before loading weights when the heads file is missing or for a differently shaped model."""
    from transformers import AutoConfig

    from lofit.backbone import resolve_model_path
    from lofit.families import head_geometry
    from lofit.training.heads import HeadRanking

    if not Path(path).is_file():
        raise ConfigError(f"heads file {path}: file not found (run `lofit select` first)")
    ranking = HeadRanking.from_json(read_json(path), source=path)
    geometry = head_geometry(AutoConfig.from_pretrained(resolve_model_path(backbone.model)))
    if ranking.geometry != geometry:
        raise ConfigError(
            f"{path} ranks heads of '{ranking.model}' ({ranking.geometry}), not of '{backbone.model}' ({geometry})"
        )


def build_trainer(
    cfg: TrainerConfig, output_dir: Path, step: StepConfig, callbacks: Sequence[L.Callback] = ()
) -> L.Trainer:
    """A Trainer that checkpoints every epoch (`last.ckpt`), plus the best one when keep='best'.

    Two callbacks, because a monitored ModelCheckpoint only refreshes `last.ckpt` in epochs that
    improve, which would make resuming restart from a stale epoch.
    """
    checkpoints = [ModelCheckpoint(dirpath=output_dir / CHECKPOINT_DIR, filename="{epoch}", save_last=True)]
    if step.keep == "best":
        checkpoints.append(
            ModelCheckpoint(
                dirpath=output_dir / CHECKPOINT_DIR,
                filename="best-{epoch}",
                monitor=step.monitor,
                mode=step.monitor_mode,
                save_top_k=1,
            )
        )
    return L.Trainer(
        max_epochs=cfg.max_epochs,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=cfg.strategy,
        precision=cfg.precision,
        gradient_clip_val=cfg.gradient_clip_val,
        accumulate_grad_batches=cfg.accumulate_grad_batches,
        check_val_every_n_epoch=cfg.check_val_every_n_epoch,
        log_every_n_steps=cfg.log_every_n_steps,
        limit_train_batches=cfg.limit_train_batches,
        limit_val_batches=cfg.limit_val_batches,
        enable_progress_bar=cfg.enable_progress_bar,
        logger=CSVLogger(save_dir=output_dir, name="logs", version=""),
        callbacks=[*checkpoints, MetricsJsonCallback(output_dir / METRICS_FILE), *callbacks],
        default_root_dir=output_dir,
    )


def fit(
    module: InterventionModule,
    task: Task,
    data: DataConfig,
    trainer: TrainerConfig,
    validation: ValidationConfig,
    output_dir: str | Path,
    ckpt_path: str | None = None,
    callbacks: Sequence[L.Callback] = (),
) -> dict:
    """Train `module` on `task` and return the final metrics (also in `output_dir/metrics.json`)."""
    output_dir = Path(output_dir)
    datamodule = LoFiTDataModule(task, module.backbone, data, seed=module.config.seed)
    extra = [TaskMetricCallback(task, validation)] if validation.task_metric else []
    pl_trainer = build_trainer(trainer, output_dir, module.config, [*extra, *callbacks])
    pl_trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    return read_json(output_dir / METRICS_FILE) if pl_trainer.is_global_zero else {}


def load_for_training(task_spec: TaskSpec, backbone_cfg: BackboneConfig, seed: int) -> tuple[Task, LossKind, Backbone]:
    """Seed everything, resolve the task (fails fast), then load the backbone."""
    L.seed_everything(seed, workers=True)
    task = build_task(task_spec)
    loss = training_loss(task)
    return task, loss, load_backbone(process_device(backbone_cfg))

"""Assemble and run one training step: task, backbone, module, data, Trainer, callbacks.

Everything that can be wrong in a config is checked before `Trainer.fit` starts. Output layout
of a run directory:
    heads.json, heads.png  (step 1)     adapter/  (step 2)
    metrics.json           final metrics       checkpoints/last.ckpt   intervention-only checkpoints
    logs/metrics.csv       per-step CSV log    checkpoints/best.safetensors   best weights (keep: best)
"""

from __future__ import annotations

import importlib
import logging
import os
import pickle
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ModelCheckpoint

from lofit.backbone import Backbone, BackboneConfig, load_backbone
from lofit.data.examples import LossKind
from lofit.data.prompt_format import split_prompt_options
from lofit.intervention import Head
from lofit.io import read_json
from lofit.tasks.base import Task
from lofit.training.callbacks import (
    BestWeightsCheckpoint,
    EpochSummaryLines,
    MetricsJsonCallback,
    MovableParameterSummary,
    TaskMetricCallback,
)
from lofit.errors import ConfigError
from lofit.training.config import (
    ClassSpec,
    DataConfig,
    StepConfig,
    TaskSpec,
    TrainerConfig,
    ValidationConfig,
    as_list,
)
from lofit.training.csv_log import ContinuedCSVLogger
from lofit.training.datamodule import LoFiTDataModule
from lofit.training.module import InterventionModule

METRICS_FILE = "metrics.json"
CHECKPOINT_DIR = "checkpoints"
BEST_WEIGHTS_FILE = "best.safetensors"
LOGGER_MODULES = ("lightning.pytorch.loggers",)
CALLBACK_MODULES = ("lightning.pytorch.callbacks",)
TRAINER_ARGS = tuple(f.name for f in fields(TrainerConfig))
LIGHTNING_NOISE = (
    "GPU available:",
    "TPU available:",
    "HPU available:",
    "💡 Tip:",
    "Trainer already configured with model summary callbacks",
)


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
        prompt_format, options = split_prompt_options(spec.options)
        task = cls(**options)
        task.prompt_format = prompt_format
        return task
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
    """Fail before any model loads when the checkpoint is missing or holds more than plain data."""
    if ckpt_path is None or ckpt_path in ("last", "best"):
        return
    if not Path(ckpt_path).is_file():
        raise ConfigError(f"ckpt_path {ckpt_path}: file not found")
    load_plain_checkpoint(ckpt_path)


def load_plain_checkpoint(path: str | Path) -> dict:
    """A checkpoint read with `weights_only=True` (tensors and plain containers; nothing executes)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise unsafe_checkpoint(path, err) from None
    except (RuntimeError, EOFError, ValueError) as err:
        raise ConfigError(f"ckpt_path {path}: not a readable checkpoint ({str(err).splitlines()[0]})") from None


def unsafe_checkpoint(path: str | Path, err: pickle.UnpicklingError) -> ConfigError:
    blocked = next((line.strip() for line in str(err).splitlines() if "GLOBAL" in line), "")
    return ConfigError(
        f"ckpt_path {path}: refused to load, it holds objects other than tensors and plain data "
        f"(not a lofit checkpoint, or a tampered one){': ' + blocked if blocked else ''}"
    )


def check_heads_file(path: str, top_k: int | float, backbone: BackboneConfig) -> list[tuple[Head, float]]:
    """Step 2's K heads, read once and checked against the model's config before any weight loads."""
    from transformers import AutoConfig

    from lofit.backbone import resolve_model_path
    from lofit.families import head_geometry
    from lofit.training.heads import choose_heads

    if not Path(path).is_file():
        raise ConfigError(f"heads file {path}: file not found (run `lofit select` first)")
    geometry = head_geometry(AutoConfig.from_pretrained(resolve_model_path(backbone.model)))
    return choose_heads(path, top_k, backbone.model, geometry)


def class_spec(spec: str | ClassSpec, field: str) -> tuple[str, dict[str, Any]]:
    """The class path and init_args of a LightningCLI-style `{class_path, init_args}` (or a bare path)."""
    if isinstance(spec, str):
        return spec, {}
    unknown = set(spec) - {"class_path", "init_args"}
    if unknown:
        raise ConfigError(f"trainer.{field}: '{spec['class_path']}' has unknown keys {sorted(unknown)} (use init_args)")
    return spec["class_path"], spec.get("init_args") or {}


def resolve_class(class_path: str, field: str, base: type | None = None, search: Sequence[str] = ()) -> type:
    """Import `class_path`; a bare class name is looked up in the `search` modules."""
    module_name, _, name = class_path.rpartition(".")
    cls = None
    for candidate in [module_name] if module_name else search:
        try:
            cls = getattr(importlib.import_module(candidate), name, None)
        except ImportError as err:
            raise ConfigError(f"trainer.{field}: cannot import '{class_path}': {err}") from None
        if cls is not None:
            break
    if not isinstance(cls, type) or (base is not None and not issubclass(cls, base)):
        kind = f"a {base.__name__} class" if base is not None else "a class"
        raise ConfigError(f"trainer.{field}: '{class_path}' is not {kind}")
    return cls


def instantiate(spec: str | ClassSpec, field: str, base: type | None = None, search: Sequence[str] = ()) -> Any:
    """A Lightning object from its class_path spec; any failure is one line naming the class."""
    class_path, init_args = class_spec(spec, field)
    cls = resolve_class(class_path, field, base, search)
    try:
        return cls(**init_args)
    except Exception as err:  # a user's class may fail in any way; the one line names it
        raise ConfigError(f"trainer.{field}: cannot create '{class_path}': {type(err).__name__}: {err}") from None


def check_trainer(cfg: TrainerConfig) -> None:
    """Fail before any model loads when a logger or callback class does not import."""
    from lightning.pytorch.loggers import Logger

    for field, base, search in (("logger", Logger, LOGGER_MODULES), ("callbacks", L.Callback, CALLBACK_MODULES)):
        for spec in as_list(getattr(cfg, field)):
            resolve_class(class_spec(spec, field)[0], field, base, search)


def trainer_object(value: Any, field: str) -> Any:
    """A Trainer argument that may name an object (`strategy: {class_path: ...}`), else the value itself."""
    return instantiate(value, field) if isinstance(value, dict) else value


def build_trainer(
    cfg: TrainerConfig,
    output_dir: Path,
    step: StepConfig,
    callbacks: Sequence[L.Callback] = (),
    resume: bool = False,
) -> L.Trainer:
    """A Trainer with every `trainer` setting, lofit's log and checkpoints, then the user's loggers and callbacks.

    Two checkpoint callbacks, because a monitored ModelCheckpoint only refreshes `last.ckpt` in
    epochs that improve, which would make resuming restart from a stale epoch. Lightning runs them
    in list order, so the best one goes first, or `last.ckpt` would hold the previous epoch's best.
    """
    from lightning.pytorch.callbacks import ModelSummary, ProgressBar
    from lightning.pytorch.loggers import Logger

    last = ModelCheckpoint(dirpath=output_dir / CHECKPOINT_DIR, filename="{epoch}", save_last=True)
    checkpoints: list[L.Callback] = [last]
    if step.keep == "best":
        best = BestWeightsCheckpoint(
            output_dir / CHECKPOINT_DIR / BEST_WEIGHTS_FILE,
            dirpath=output_dir / CHECKPOINT_DIR,
            filename="best-{epoch}",
            monitor=step.monitor,
            mode=step.monitor_mode,
            save_top_k=1,
        )
        checkpoints = [best, last]  # best first: `last.ckpt` then records this epoch's best, for resuming
    loggers = [instantiate(spec, "logger", Logger, LOGGER_MODULES) for spec in as_list(cfg.logger)]
    users = [instantiate(spec, "callbacks", L.Callback, CALLBACK_MODULES) for spec in as_list(cfg.callbacks)]
    own = [*checkpoints, MetricsJsonCallback(output_dir / METRICS_FILE), *callbacks]
    if cfg.enable_model_summary is not False and not any(isinstance(c, ModelSummary) for c in users):
        own.append(MovableParameterSummary())
    in_log_file = not sys.stderr.isatty()
    if cfg.enable_progress_bar is not False and in_log_file and not any(isinstance(c, ProgressBar) for c in users):
        own.append(EpochSummaryLines())
    settings = {name: getattr(cfg, name) for name in TRAINER_ARGS}
    settings.update(
        accelerator=trainer_object(cfg.accelerator, "accelerator"),
        strategy=trainer_object(cfg.strategy, "strategy"),
        profiler=trainer_object(cfg.profiler, "profiler"),
        plugins=[trainer_object(plugin, "plugins") for plugin in as_list(cfg.plugins)] or None,
        logger=[ContinuedCSVLogger(output_dir, resume=resume), *loggers],
        callbacks=[*own, *users],
        default_root_dir=output_dir,
        enable_checkpointing=True,
    )
    try:
        with quiet_lightning():
            return L.Trainer(**settings)
    except (ValueError, TypeError, MisconfigurationException) as err:
        raise ConfigError(f"trainer: {err}") from None


class _DropLightningNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(LIGHTNING_NOISE)


@contextmanager
def quiet_lightning(resume: bool = False) -> Iterator[None]:
    """Drop Lightning's start-up chatter (device availability, product tips, a torch deprecation it
    triggers) and, when resuming, its warning that the checkpoint folder is not empty."""
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    noise = _DropLightningNoise()
    logger.addFilter(noise)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
            if resume:
                warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
            yield
    finally:
        logger.removeFilter(noise)


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
    """Train `module` on `task` and return the final metrics (also in `output_dir/metrics.json`).

    A resumed checkpoint is read with `weights_only=True`: one holding anything but tensors and
    plain data is refused, never unpickled.
    """
    output_dir = Path(output_dir)
    datamodule = LoFiTDataModule(task, module.backbone, data, seed=module.config.seed)
    extra = [TaskMetricCallback(task, validation)] if validation.task_metric else []
    resume = ckpt_path is not None
    with quiet_lightning(resume):
        pl_trainer = build_trainer(trainer, output_dir, module.config, [*extra, *callbacks], resume=resume)
        try:
            pl_trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        except pickle.UnpicklingError as err:
            raise unsafe_checkpoint(ckpt_path, err) from None
    return read_json(output_dir / METRICS_FILE) if pl_trainer.is_global_zero else {}


def load_for_training(task_spec: TaskSpec, backbone_cfg: BackboneConfig, seed: int) -> tuple[Task, LossKind, Backbone]:
    """Seed everything, resolve the task (fails fast), then load the backbone."""
    L.seed_everything(seed, workers=True)
    task = build_task(task_spec)
    loss = training_loss(task)
    return task, loss, load_backbone(process_device(backbone_cfg), task.prompt_format)

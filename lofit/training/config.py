"""Typed settings of a training run; their fields and docstrings are the YAML/CLI schema.

Each dataclass checks its own values on construction, so a bad config fails while parsing,
before any model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


class ConfigError(ValueError):
    """A user-facing configuration mistake; the CLI prints it as one line."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass
class TaskSpec:
    """The task whose data trains (and evaluates) the intervention.

    Args:
        name: a registered task (truthfulqa, mquake, clutrr, triviaqa, nq_open, mmlu) or the
            import path `package.module:ClassName` of a `lofit.tasks.base.Task` subclass.
        data_dir: folder holding the raw task files (registered tasks).
        options: keyword options of the task, e.g. `{fold: 1}` for truthfulqa.
    """

    name: str
    data_dir: str = "data/raw"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """Batching and truncation (rules in `lofit.data.collate`).

    Args:
        batch_size: training examples (or preference pairs) per step and device.
        eval_batch_size: examples per validation batch.
        max_length: longest sequence in tokens, prompt + answer + EOS.
        max_prompt_length: longest preference-pair prompt in tokens (its end is kept).
        train_limit: use only the first N training examples (quick runs).
        val_limit: use only the first N validation examples.
        num_workers: DataLoader worker processes.
    """

    batch_size: int = 8
    eval_batch_size: int = 8
    max_length: int = 512
    max_prompt_length: int = 128
    train_limit: int | None = None
    val_limit: int | None = None
    num_workers: int = 0

    def __post_init__(self) -> None:
        _require(self.batch_size > 0 and self.eval_batch_size > 0, "batch sizes must be positive")
        _require(
            0 < self.max_prompt_length < self.max_length,
            f"need 0 < max_prompt_length ({self.max_prompt_length}) < max_length ({self.max_length})",
        )
        for name in ("train_limit", "val_limit"):
            value = getattr(self, name)
            _require(value is None or value > 0, f"{name} must be positive, got {value}")


@dataclass(kw_only=True)
class StepConfig:
    """Settings shared by both steps.

    Args:
        lr: AdamW learning rate, decayed linearly to 0 over the run without warmup.
        init_std: σ of the N(0, σ) initialisation of the trained vectors.
        seed: seeds Python/NumPy/torch, the vector initialisation and the data order.
        beta: DPO temperature β (DPO tasks only).
        label_smoothing: DPO label smoothing ε (0 = the standard sigmoid loss).
        keep: which weights become the product: `last` epoch (the reference) or `best` by `monitor`.
        monitor: logged metric that picks the `best` checkpoint, e.g. `val/loss` or `val/task/mc1`.
        monitor_mode: whether `monitor` is better when `min` or `max`.
    """

    lr: float = 5e-3
    init_std: float = 1e-3
    seed: int = 42
    beta: float = 0.5
    label_smoothing: float = 0.0
    keep: Literal["last", "best"] = "last"
    monitor: str = "val/loss"
    monitor_mode: Literal["min", "max"] = "min"

    def __post_init__(self) -> None:
        _require(self.lr > 0, f"lr must be positive, got {self.lr}")
        _require(self.init_std >= 0, f"init_std must be >= 0, got {self.init_std}")
        _require(self.beta > 0, f"DPO beta must be positive, got {self.beta}")
        _require(0 <= self.label_smoothing < 0.5, f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")


@dataclass(kw_only=True)
class SelectionConfig(StepConfig):
    """Step 1: train a scale A on every head with an L1 penalty, rank heads by ‖A‖₂.

    Args:
        l1_lambda: weight λ of the penalty λ·Σ|A| (0 disables it).
    """

    l1_lambda: float = 5e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.l1_lambda >= 0, f"l1_lambda must be >= 0, got {self.l1_lambda}")


@dataclass(kw_only=True)
class TuningConfig(StepConfig):
    """Step 2: train an offset v on the top-K heads of a step-1 ranking.

    Args:
        heads: the `heads.json` written by step 1 (`lofit select`).
        top_k: number of heads (int) or fraction of all heads (float in (0, 1]).
    """

    heads: str
    top_k: int | float = 0.1
    lr: float = 1e-2

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.top_k, float):
            _require(0 < self.top_k <= 1, f"a fractional top_k must be in (0, 1], got {self.top_k}")
        else:
            _require(self.top_k > 0, f"top_k must be positive, got {self.top_k}")


@dataclass
class ValidationConfig:
    """The task metric computed on the validation split after each validation loss pass.

    Args:
        task_metric: run `task.evaluate` on the val split each epoch and log `val/task/<metric>`
            (every rank evaluates the same examples, so every rank logs the same value).
        limit: evaluate only the first N validation examples (None: all).
        batch_size: batch size of the task's evaluation.
    """

    task_metric: bool = False
    limit: int | None = 100
    batch_size: int = 16


@dataclass
class TrainerConfig:
    """The subset of `lightning.Trainer` arguments a LoFiT run uses.

    Args:
        max_epochs: training epochs (the reference trains 5).
        accelerator: `cpu`, `gpu`, `auto`.
        devices: devices per node (int), or `auto`.
        num_nodes: machines.
        strategy: `auto`, `ddp` (one process per device; gloo on CPU), ...
        precision: `32-true`, `bf16-mixed`, `16-mixed`.
        gradient_clip_val: clip the gradient norm at this value (the reference uses 1.0).
        accumulate_grad_batches: optimizer step every N batches.
        check_val_every_n_epoch: validation frequency in epochs.
        log_every_n_steps: logging frequency of per-step metrics.
        limit_train_batches: cap the batches of an epoch (int count or float fraction).
        limit_val_batches: cap the validation batches.
        enable_progress_bar: show Lightning's progress bars.
    """

    max_epochs: int = 5
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    gradient_clip_val: float | None = 1.0
    accumulate_grad_batches: int = 1
    check_val_every_n_epoch: int = 1
    log_every_n_steps: int = 10
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None
    enable_progress_bar: bool = True

    def __post_init__(self) -> None:
        _require(self.max_epochs > 0, f"max_epochs must be positive, got {self.max_epochs}")

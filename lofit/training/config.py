"""Typed settings of a training run; their fields and docstrings are the YAML/CLI schema.

Each dataclass checks its own values on construction, so a bad config fails while parsing,
before any model is loaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from lofit.errors import require


@dataclass
class TaskSpec:
    """The task whose data trains (and evaluates) the intervention.

    Args:
        name: a registered task (truthfulqa, mquake, clutrr, triviaqa, nq_open, mmlu) or the
            import path `package.module:ClassName` of a `lofit.tasks.base.Task` subclass.
        data_dir: folder holding the raw task files (registered tasks).
        options: keyword options of the task, e.g. `{fold: 1}` for truthfulqa. Every task also
            takes `chat_template: true` (prompts rendered with the tokenizer's chat template, as a
            user turn) and `system_prompt: "..."` (a system turn before it); both off by default.
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
        require(self.batch_size > 0 and self.eval_batch_size > 0, "batch sizes must be positive")
        require(
            0 < self.max_prompt_length < self.max_length,
            f"need 0 < max_prompt_length ({self.max_prompt_length}) < max_length ({self.max_length})",
        )
        for name in ("train_limit", "val_limit"):
            value = getattr(self, name)
            require(value is None or value > 0, f"{name} must be positive, got {value}")


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
        require(0 < self.lr < math.inf, f"lr must be positive and finite, got {self.lr}")
        require(0 <= self.init_std < math.inf, f"init_std must be >= 0 and finite, got {self.init_std}")
        require(0 < self.beta < math.inf, f"DPO beta must be positive and finite, got {self.beta}")
        require(0 <= self.label_smoothing < 0.5, f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")


@dataclass(kw_only=True)
class SelectionConfig(StepConfig):
    """Step 1: train a scale A on every head with an L1 penalty, rank heads by ‖A‖₂.

    Args:
        l1_lambda: weight λ of the penalty λ·Σ|A| (0 disables it).
    """

    l1_lambda: float = 5e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.l1_lambda >= 0, f"l1_lambda must be >= 0, got {self.l1_lambda}")


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
            require(0 < self.top_k <= 1, f"a fractional top_k must be in (0, 1], got {self.top_k}")
        else:
            require(self.top_k > 0, f"top_k must be positive, got {self.top_k}")


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

    def __post_init__(self) -> None:
        require(self.limit is None or self.limit > 0, f"validation.limit must be positive, got {self.limit}")
        require(self.batch_size > 0, f"validation.batch_size must be positive, got {self.batch_size}")


ClassSpec = dict[str, Any]
"""A Lightning object by import path, as LightningCLI writes it: `{class_path: ..., init_args: {...}}`."""

TRAINER_ARGS_SET_BY_LOFIT = ("default_root_dir", "enable_checkpointing")
"""`lightning.Trainer` arguments a run fixes itself: the run directory and its checkpoints (resume, keep=best)."""


@dataclass
class TrainerConfig:
    """Every `lightning.Trainer` argument but the run directory and checkpointing, which lofit sets.

    Objects (loggers, callbacks, plugins, profiler, strategy, accelerator) are given as LightningCLI
    writes them, `{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {save_dir: logs}}`;
    a bare class name is looked up in `lightning.pytorch.loggers` / `lightning.pytorch.callbacks`.
    lofit's own CSV log (`logs/metrics.csv`), checkpoints and `metrics.json` are always added.
    The defaults are Lightning's except where a LoFiT run differs (marked *).

    Args:
        accelerator: `cpu`, `gpu`, `auto`, ... or an Accelerator by class_path.
        strategy: `auto`, `ddp` (one process per device; gloo on CPU), `fsdp`, ... or a Strategy by class_path.
        devices: devices per node (int), a list of device indices, or `auto` (* 1).
        num_nodes: machines.
        precision: `32-true`, `bf16-mixed`, `16-mixed`, ... (* `32-true`).
        logger: extra loggers (one or a list, by class_path) besides lofit's CSV log.
        callbacks: extra callbacks (one or a list, by class_path).
        fast_dev_run: run N (or 1 if true) batches of train and val as a smoke test.
        max_epochs: training epochs; -1 for no limit (then set max_steps) (* 5, the reference's).
        min_epochs: train at least this many epochs.
        max_steps: stop after this many optimizer steps (-1: no limit).
        min_steps: train at least this many optimizer steps.
        max_time: stop after this long, `DD:HH:MM:SS` or `{hours: 2}`.
        limit_train_batches: cap the batches of an epoch (int count or float fraction).
        limit_val_batches: cap the validation batches.
        limit_test_batches: cap the test batches.
        limit_predict_batches: cap the predict batches.
        overfit_batches: train and validate on this many (or this fraction of) training batches.
        val_check_interval: validate every N batches (int) or fraction of an epoch (float).
        check_val_every_n_epoch: validation frequency in epochs.
        num_sanity_val_steps: validation batches run before training (-1: all).
        log_every_n_steps: logging frequency of per-step metrics (* 10).
        enable_progress_bar: progress bar in a terminal, one summary line per epoch otherwise.
        enable_model_summary: print the summary of the trained parameters at the start.
        accumulate_grad_batches: optimizer step every N batches.
        gradient_clip_val: clip the gradients at this value (* 1.0, the reference's).
        gradient_clip_algorithm: `norm` or `value`.
        deterministic: use deterministic algorithms (`warn`: warn where there are none).
        benchmark: cudnn.benchmark.
        inference_mode: validate under torch.inference_mode rather than no_grad.
        use_distributed_sampler: let Lightning shard the data across processes.
        profiler: `simple`, `advanced`, `pytorch` or a Profiler by class_path.
        detect_anomaly: torch autograd anomaly detection.
        barebones: Lightning's minimal-overhead mode (incompatible with lofit's logging and checkpoints).
        plugins: precision / cluster-environment / checkpoint-IO plugins (names or class_path).
        sync_batchnorm: synchronise batch norm layers across processes.
        reload_dataloaders_every_n_epochs: rebuild the dataloaders every N epochs.
        enable_autolog_hparams: log the module's hyperparameters to the loggers.
        model_registry: Lightning model registry name to upload checkpoints to.
    """

    accelerator: str | ClassSpec = "auto"
    strategy: str | ClassSpec = "auto"
    devices: int | str | list[int] = 1
    num_nodes: int = 1
    precision: str | int | None = "32-true"
    logger: ClassSpec | list[ClassSpec] | None = None
    callbacks: ClassSpec | list[ClassSpec] | None = None
    fast_dev_run: int | bool = False
    max_epochs: int | None = 5
    min_epochs: int | None = None
    max_steps: int = -1
    min_steps: int | None = None
    max_time: str | dict[str, int] | None = None
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None
    limit_test_batches: int | float | None = None
    limit_predict_batches: int | float | None = None
    overfit_batches: int | float = 0.0
    val_check_interval: int | float | str | dict[str, int] | None = None
    check_val_every_n_epoch: int | None = 1
    num_sanity_val_steps: int | None = None
    log_every_n_steps: int | None = 10
    enable_progress_bar: bool | None = True
    enable_model_summary: bool | None = None
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = 1.0
    gradient_clip_algorithm: str | None = None
    deterministic: bool | Literal["warn"] | None = None
    benchmark: bool | None = None
    inference_mode: bool = True
    use_distributed_sampler: bool = True
    profiler: str | ClassSpec | None = None
    detect_anomaly: bool = False
    barebones: bool = False
    plugins: str | ClassSpec | list[str | ClassSpec] | None = None
    sync_batchnorm: bool = False
    reload_dataloaders_every_n_epochs: int = 0
    enable_autolog_hparams: bool = True
    model_registry: str | None = None

    def __post_init__(self) -> None:
        require(
            self.max_epochs is None or self.max_epochs == -1 or self.max_epochs > 0,
            f"max_epochs must be positive (or -1: no limit), got {self.max_epochs}",
        )
        require(
            self.accumulate_grad_batches > 0,
            f"accumulate_grad_batches must be positive, got {self.accumulate_grad_batches}",
        )
        for name in ("logger", "callbacks", "plugins", "profiler", "strategy", "accelerator"):
            for spec in as_list(getattr(self, name)):
                require(
                    isinstance(spec, str) or isinstance(spec.get("class_path"), str),
                    f"trainer.{name}: {spec!r} needs a 'class_path' (and optional 'init_args')",
                )


def as_list(value: Any) -> list:
    """None → [], a list as is, anything else → [value] (Lightning's one-or-many arguments)."""
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]

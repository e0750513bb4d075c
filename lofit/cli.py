"""The `lofit` command: one subcommand per function in `SUBCOMMANDS`.

Each subcommand's typed, documented signature is its CLI and YAML schema (jsonargparse):
    lofit select --config configs/truthfulqa-select.yaml
    lofit tune --config configs/truthfulqa-tune.yaml --tuning.top_k 16
    lofit select --config configs/mquake-select.yaml --trainer.devices 2 --trainer.strategy ddp
    lofit evaluate --task.name truthfulqa --adapter runs/truthfulqa/fold0/tune/adapter
    lofit select --print_config        # a complete YAML with every default
Add a subcommand by adding a typed function to `SUBCOMMANDS`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from lofit.backbone import BackboneConfig
from lofit.training.config import (
    ConfigError,
    DataConfig,
    SelectionConfig,
    TaskSpec,
    TrainerConfig,
    TuningConfig,
    ValidationConfig,
)


def select(
    task: TaskSpec,
    selection: SelectionConfig = SelectionConfig(),
    backbone: BackboneConfig = BackboneConfig(),
    data: DataConfig = DataConfig(),
    trainer: TrainerConfig = TrainerConfig(),
    validation: ValidationConfig = ValidationConfig(),
    output_dir: str = "runs/select",
    ckpt_path: str | None = None,
) -> dict:
    """LoFiT step 1: train per-head scales with an L1 penalty and rank the heads.

    Writes `heads.json` (ranking + full score matrix), `heads.png`, `metrics.json`, checkpoints
    and a CSV log into `output_dir`.

    Args:
        task: the task to train on.
        selection: learning rate, λ, initialisation, checkpoint choice.
        backbone: the frozen model.
        data: batching and truncation.
        trainer: epochs, devices, strategy, precision, clipping.
        validation: optional task metric on the val split.
        output_dir: run directory.
        ckpt_path: resume from this checkpoint (e.g. `<output_dir>/checkpoints/last.ckpt`).
    """
    from lofit.training.run import check_resume, fit, load_for_training
    from lofit.training.selection import HeadSelectionModule

    check_resume(ckpt_path)
    task_obj, loss, model = load_for_training(task, backbone, selection.seed)
    module = HeadSelectionModule(model, loss, selection, output_dir, task_name=task.name)
    return fit(module, task_obj, data, trainer, validation, output_dir, ckpt_path)


def tune(
    task: TaskSpec,
    tuning: TuningConfig,
    backbone: BackboneConfig = BackboneConfig(),
    data: DataConfig = DataConfig(),
    trainer: TrainerConfig = TrainerConfig(),
    validation: ValidationConfig = ValidationConfig(),
    output_dir: str = "runs/tune",
    ckpt_path: str | None = None,
) -> dict:
    """LoFiT step 2: train per-head offsets on the top-K heads of a step-1 ranking.

    Writes `adapter/` (adapter.safetensors + adapter_config.json), `metrics.json`, checkpoints
    and a CSV log into `output_dir`.

    Args:
        task: the task to train on.
        tuning: heads file, K, learning rate, initialisation, checkpoint choice.
        backbone: the frozen model (the one the heads were selected on).
        data: batching and truncation.
        trainer: epochs, devices, strategy, precision, clipping.
        validation: optional task metric on the val split.
        output_dir: run directory.
        ckpt_path: resume from this checkpoint (e.g. `<output_dir>/checkpoints/last.ckpt`).
    """
    from lofit.training.run import check_heads_file, check_resume, fit, load_for_training
    from lofit.training.tuning import BiasTuningModule

    check_resume(ckpt_path)
    check_heads_file(tuning.heads, backbone)
    task_obj, loss, model = load_for_training(task, backbone, tuning.seed)
    module = BiasTuningModule(model, loss, tuning, output_dir)
    return fit(module, task_obj, data, trainer, validation, output_dir, ckpt_path)


def evaluate(
    task: TaskSpec,
    adapter: str | None = None,
    backbone: BackboneConfig = BackboneConfig(),
    split: Literal["train", "val", "test"] = "test",
    limit: int | None = None,
    batch_size: int = 16,
    output_dir: str = "runs/evaluate",
) -> dict:
    """Score the backbone, with an adapter attached if given, on a task split.

    Writes the task's `predictions.jsonl` and `summary.json` into `output_dir`.

    Args:
        task: the task to evaluate.
        adapter: folder written by `lofit tune` (None: the base model).
        backbone: the frozen model the adapter was trained on.
        split: which split to score.
        limit: score only the first N examples.
        batch_size: evaluation batch size.
        output_dir: where the predictions and summary go.
    """
    import contextlib

    import torch

    from lofit.backbone import load_backbone
    from lofit.training.run import build_task

    task_obj = build_task(task)
    if adapter is not None and not Path(adapter).is_dir():
        raise ConfigError(f"adapter {adapter}: folder not found")
    model = load_backbone(backbone)
    context = contextlib.nullcontext()
    if adapter is not None:
        from lofit.adapter import load_adapter

        context = load_adapter(adapter, model).applied(model.model, model.family)
    with context, torch.no_grad():
        return task_obj.evaluate(model, split=split, out_dir=output_dir, limit=limit, batch_size=batch_size)


SUBCOMMANDS: dict[str, Callable[..., dict]] = {"select": select, "tune": tune, "evaluate": evaluate}


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `lofit` console script; configuration mistakes exit 2 with one line."""
    from jsonargparse import auto_cli

    try:
        result = auto_cli(SUBCOMMANDS, args=argv)
    except ConfigError as err:
        print(f"lofit: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if result:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

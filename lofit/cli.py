"""The `lofit` command: one subcommand per function in `SUBCOMMANDS`.

Each subcommand's typed, documented signature is its CLI and YAML schema (jsonargparse):
    lofit select --config configs/truthfulqa-select.yaml
    lofit tune --config configs/truthfulqa-tune.yaml --tuning.top_k 16
    lofit select --config configs/mquake-select.yaml --trainer.devices 2 --trainer.strategy ddp
    lofit evaluate --task.name truthfulqa --adapter outputs/truthfulqa/fold0/tune/adapter
    lofit select --print_config        # a complete YAML with every default
    lofit convert --output_dir data/models/base
    lofit export outputs/mquake/tune/adapter --backbone.model data/models/base --output_dir outputs/merged
    lofit generate --task.name truthfulqa --adapter ... --output_file answers.jsonl
    lofit judge answers.jsonl --judge_config.model gpt-4o --require true
    lofit serve --backbone.model data/models/base --adapter outputs/mquake/tune/adapter --port 8000
    lofit iti --task.name truthfulqa --top_k '[8, 27]' --alpha '[5, 15]'     # baselines, same data
    lofit lora --config configs/mquake-lora.yaml && lofit evaluate --task.name mquake --adapter outputs/lora/lora
Add a subcommand by adding a typed function to `SUBCOMMANDS`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from lofit.backbone import BackboneConfig
from lofit.evaluation.judge import JudgeConfig
from lofit.methods.commands import iti, lora, red, repe
from lofit.serve import serve
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
    output_dir: str = "outputs/select",
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
    from lofit.methods.train import train_step

    return train_step("select", task, selection, backbone, data, trainer, validation, output_dir, ckpt_path)


def tune(
    task: TaskSpec,
    tuning: TuningConfig,
    backbone: BackboneConfig = BackboneConfig(),
    data: DataConfig = DataConfig(),
    trainer: TrainerConfig = TrainerConfig(),
    validation: ValidationConfig = ValidationConfig(),
    output_dir: str = "outputs/tune",
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
    from lofit.methods.train import train_step

    return train_step("tune", task, tuning, backbone, data, trainer, validation, output_dir, ckpt_path)


def evaluate(
    task: TaskSpec,
    adapter: str | None = None,
    backbone: BackboneConfig = BackboneConfig(),
    split: Literal["train", "val", "test"] = "test",
    limit: int | None = None,
    batch_size: int = 16,
    output_dir: str = "outputs/evaluate",
) -> dict:
    """Score the backbone, with an adapter attached if given, on a task split.

    Writes the task's `predictions.jsonl` and `summary.json` into `output_dir`.

    Args:
        task: the task to evaluate.
        adapter: an edit folder: `lofit tune` adapter, ITI adapter, LoRA, RED or RepE steering (None: base model).
        backbone: the frozen model the adapter was trained on.
        split: which split to score.
        limit: score only the first N examples.
        batch_size: evaluation batch size.
        output_dir: where the predictions and summary go.
    """
    import torch

    from lofit.training.run import build_task

    task_obj = build_task(task)
    model, context = _with_adapter(backbone, adapter)
    with context, torch.no_grad():
        return task_obj.evaluate(model, split=split, out_dir=output_dir, limit=limit, batch_size=batch_size)


def _with_adapter(backbone: BackboneConfig, adapter: str | None):
    """Load the backbone; a context manager that applies the edit (any method's folder) or does nothing."""
    import contextlib

    from lofit.backbone import load_backbone
    from lofit.methods.loading import edit_method, load_edit

    if adapter is not None:
        if not Path(adapter).is_dir():
            raise ConfigError(f"adapter {adapter}: folder not found")
        try:
            edit_method(adapter)  # an unknown folder fails before the weights load
        except ValueError as err:
            raise ConfigError(str(err)) from None
    model = load_backbone(backbone)
    if adapter is None:
        return model, contextlib.nullcontext()
    try:
        edit = load_edit(adapter, model)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return model, edit.applied(model.model, model.family)


def convert(model: str = "embedded:smollm2-135m-instruct", output_dir: str = "data/models/base") -> dict:
    """Write a backbone as a local safetensors folder (the embedded GGUF is dequantized once).

    Args:
        model: `embedded:NAME`, a local Hugging Face folder, or a Hub id.
        output_dir: the folder to create (replaced atomically).
    """
    from lofit.convert import materialise

    try:
        return {"model": model, "output_dir": str(materialise(model, output_dir))}
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(str(err)) from None


def export(adapter: str, backbone: BackboneConfig = BackboneConfig(), output_dir: str = "outputs/merged") -> dict:
    """Fold an adapter into the backbone and save a plain Hugging Face folder.

    The folder loads with `transformers` alone (no lofit) and gives the hooked model's logits;
    serve it with any Hugging Face server, e.g. vLLM.

    Args:
        adapter: folder written by `lofit tune`.
        backbone: the unquantized backbone the adapter was trained on.
        output_dir: the folder to create.
    """
    from lofit.adapter import load_adapter
    from lofit.backbone import load_backbone
    from lofit.merge import export_merged

    if not Path(adapter).is_dir():
        raise ConfigError(f"adapter {adapter}: folder not found")
    model = load_backbone(backbone)
    try:
        intervention = load_adapter(adapter, model)
        export_merged(model.model, model.tokenizer, intervention, output_dir)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return {"adapter": adapter, "output_dir": output_dir, "heads": len(intervention.heads)}


def generate(
    task: TaskSpec,
    adapter: str | None = None,
    backbone: BackboneConfig = BackboneConfig(),
    split: Literal["train", "val", "test"] = "test",
    limit: int | None = None,
    batch_size: int = 16,
    model_label: str = "model",
    output_file: str = "outputs/generate/answers.jsonl",
) -> dict:
    """Greedy open-ended TruthfulQA answers (instruction + primer context), for `lofit judge`.

    Args:
        task: a truthfulqa task (its fold picks the questions).
        adapter: an edit folder: `lofit tune` adapter, ITI adapter, LoRA, RED or RepE steering (None: base model).
        backbone: the frozen model.
        split: which split's questions to answer.
        limit: answer only the first N questions.
        batch_size: generation batch size (left padding).
        model_label: recorded in every row (e.g. base / lofit).
        output_file: the JSONL of answers to write.
    """
    import torch

    from lofit.evaluation.open_ended import generate_answers
    from lofit.tasks.truthfulqa import TruthfulQA
    from lofit.training.run import build_task

    task_obj = build_task(task)
    if not isinstance(task_obj, TruthfulQA):
        raise ConfigError(f"open-ended generation is defined for truthfulqa, not '{task.name}'")
    model, context = _with_adapter(backbone, adapter)
    with context, torch.no_grad():
        rows = generate_answers(model, task_obj, split, limit, batch_size, model_label, output_file)
    return {"answers": len(rows), "output_file": output_file}


def judge(answers: str, output_dir: str = "outputs/judge", judge_config: JudgeConfig = JudgeConfig(), require: bool = False) -> dict:
    """Judge generated answers for truthfulness and informativeness (GPT-4 or a compatible endpoint).

    Without `OPENAI_API_KEY` (or the configured key variable) and without a `base_url`, the summary
    records `judged: false` and why, unless `require` makes that an error.

    Args:
        answers: JSONL of {id, question, answer, model} rows (from `lofit generate`).
        output_dir: where `judgments.jsonl` and `judge_summary.json` go.
        judge_config: judge endpoint, model, style, concurrency, retries and cache.
        require: fail instead of recording "not judged".
    """
    from lofit.evaluation.judge import JudgeNotConfigured, judge_file

    try:
        return judge_file(answers, output_dir, judge_config, require=require)
    except (JudgeNotConfigured, FileNotFoundError, ValueError) as err:
        raise ConfigError(str(err)) from None


SUBCOMMANDS: dict[str, Callable[..., dict | None]] = {
    "select": select,
    "tune": tune,
    "evaluate": evaluate,
    "convert": convert,
    "export": export,
    "generate": generate,
    "judge": judge,
    "serve": serve,
    "iti": iti,
    "repe": repe,
    "lora": lora,
    "red": red,
}


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

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

Only light modules (config dataclasses) are imported here, so `lofit --help` and argument
errors answer at once; torch, transformers, fastapi and the openai client load inside the
subcommand that needs them. User mistakes end as one `lofit: error: ...` line (exit 2); a full
traceback is printed only with `LOFIT_DEBUG=1`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from lofit.backbone import BackboneConfig
from lofit.data.prompt_format import PromptFormat
from lofit.data.sources import DataSourceError
from lofit.evaluation import check_batch_size, check_limit
from lofit.evaluation.judge import JudgeAPIError, JudgeConfig, JudgeNotConfigured
from lofit.methods.commands import iti, lora, red, reft, repe
from lofit.errors import ConfigError
from lofit.threads import prefer_passive_omp_wait
from lofit.training.config import (
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
        adapter: an edit folder: `lofit tune` adapter, ITI adapter, LoRA, RED, ReFT or RepE steering (None: base model).
        backbone: the frozen model the adapter was trained on.
        split: which split to score.
        limit: score only the first N examples.
        batch_size: evaluation batch size.
        output_dir: where the predictions and summary go.
    """
    import torch

    from lofit.training.run import build_task

    check_limit(limit)
    check_batch_size(batch_size)
    task_obj = build_task(task)
    model, context = _with_adapter(backbone, adapter, task_obj.prompt_format)
    with context, torch.no_grad():
        return task_obj.evaluate(model, split=split, out_dir=output_dir, limit=limit, batch_size=batch_size)


def _check_edit_folder(adapter: str, backbone: BackboneConfig) -> str:
    """Validate an edit folder before the backbone loads; returns its method.

    The folder must exist and say what it is, every safetensors file in it must be complete and
    finite, and a lofit adapter must fit the backbone's head geometry (read from its config.json
    when the backbone is a local folder), so a bad `--adapter` fails in seconds, not after the
    model loaded.
    """
    from lofit.adapter import check_adapter_geometry, read_weights
    from lofit.backbone import resolve_model_path
    from lofit.methods.loading import edit_method

    folder = Path(adapter)
    if not folder.is_dir():
        raise ConfigError(f"adapter {adapter}: folder not found")
    method = edit_method(folder)
    for weights in sorted(folder.glob("*.safetensors")):
        read_weights(weights)
    if method == "lofit":
        model_folder = Path(resolve_model_path(backbone.model))
        if (model_folder / "config.json").is_file():
            check_adapter_geometry(folder, model_folder)
    return method


def _with_adapter(backbone: BackboneConfig, adapter: str | None, prompt_format: PromptFormat):
    """Load the backbone (encoding prompts in the task's format); a context manager that applies
    the edit (any method's folder) or does nothing."""
    import contextlib

    from lofit.backbone import load_backbone
    from lofit.methods.loading import load_edit

    if adapter is not None:
        _check_edit_folder(adapter, backbone)
    model = load_backbone(backbone, prompt_format)
    if adapter is None:
        return model, contextlib.nullcontext()
    edit = load_edit(adapter, model)
    return model, edit.applied(model.model, model.family)


def convert(model: str = "embedded:smollm2-135m-instruct", output_dir: str = "data/models/base") -> dict:
    """Write a backbone as a local safetensors folder (the embedded GGUF is dequantized once).

    Args:
        model: `embedded:NAME`, a local Hugging Face folder, or a Hub id.
        output_dir: the folder to create (replaced atomically).
    """
    from lofit.convert import materialise

    return {"model": model, "output_dir": str(materialise(model, output_dir))}


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

    if backbone.quantization != "none":
        raise ConfigError("export needs an unquantized backbone: set --backbone.quantization none")
    method = _check_edit_folder(adapter, backbone)
    if method != "lofit":
        raise ConfigError(f"adapter {adapter}: export folds lofit adapters only, this is a {method} folder")
    model = load_backbone(backbone)
    intervention = load_adapter(adapter, model)
    export_merged(model.model, model.tokenizer, intervention, output_dir)
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
    """Greedy answers to a split's prompts, written as JSONL.

    TruthfulQA: open-ended answers (instruction + primer context), rows {id, question, answer,
    model}, for `lofit judge`. Other tasks with prompts (files): each prompt continued by the
    exact-match evaluator's generation code (the task's max_new_tokens, first_line stop and prompt
    format), rows {prompt, generation, model}.

    Args:
        task: truthfulqa (its fold picks the questions) or a files task.
        adapter: an edit folder: `lofit tune` adapter, ITI adapter, LoRA, RED, ReFT or RepE steering (None: base model).
        backbone: the frozen model.
        split: which split's prompts to answer.
        limit: answer only the first N prompts.
        batch_size: generation batch size (left padding).
        model_label: recorded in every row (e.g. base / lofit).
        output_file: the JSONL of answers to write.
    """
    import torch

    from lofit.evaluation import check_examples, first
    from lofit.evaluation.generate import write_continuations
    from lofit.evaluation.open_ended import generate_answers
    from lofit.tasks.truthfulqa import TruthfulQA
    from lofit.training.run import build_task

    check_limit(limit)
    check_batch_size(batch_size)
    task_obj = build_task(task)
    if isinstance(task_obj, TruthfulQA):
        model, context = _with_adapter(backbone, adapter, task_obj.prompt_format)
        with context, torch.no_grad():
            rows = generate_answers(model, task_obj, split, limit, batch_size, model_label, output_file)
        return {"answers": len(rows), "output_file": output_file}
    plan = task_obj.generation_prompts(split)
    prompts = list(first(plan.prompts, limit))
    check_examples(prompts, "prompts")
    model, context = _with_adapter(backbone, adapter, task_obj.prompt_format)
    with context, torch.no_grad():
        rows = write_continuations(model, prompts, plan.max_new_tokens, output_file, batch_size, plan.is_final, model_label)
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
    from lofit.evaluation.judge import judge_file

    return judge_file(answers, output_dir, judge_config, require=require)


def serve(
    backbone: BackboneConfig = BackboneConfig(),
    adapter: str | list[str] | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    model_id: str = "lofit",
    api_key_env: str | None = None,
    max_batch: int = 16,
    max_queue: int = 64,
    max_body_bytes: int = 2_000_000,
    max_prompt_tokens: int = 4096,
    max_tokens: int = 2048,
) -> None:
    """Serve the backbone and its adapters over an OpenAI-compatible HTTP API, batching requests.

    Clients use `base_url=http://HOST:PORT/v1` and choose a served model id with `model`. Blocks
    until interrupted. Endpoints and limits: `lofit.serve`. Several LoFiT adapters share one
    server (`--adapter truth=PATH --adapter qa=PATH`, or `--adapter '[truth=PATH, qa=PATH]'`);
    a LoRA, RED or RepE edit is served alone.

    Args:
        backbone: the frozen model to serve.
        adapter: edit folders, each `NAME=PATH` (served as NAME) or one plain `PATH` (served as
            MODEL_ID; the base model is then `MODEL_ID-base`): `lofit tune` or ITI adapters, or
            one LoRA, RED or RepE edit. None: the base model only, as MODEL_ID.
        host: interface to bind; the default accepts local connections only.
        port: TCP port.
        model_id: the model name of the base model (or of a plain `--adapter PATH`).
        api_key_env: environment variable holding the API key clients must send as
            `Authorization: Bearer KEY` (None: no key).
        max_batch: requests decoded together at most.
        max_queue: requests that may wait for a batch slot before further ones get 503.
        max_body_bytes: largest request body (413 beyond).
        max_prompt_tokens: longest prompt in tokens (400 beyond).
        max_tokens: largest `max_tokens` a request may ask for (400 beyond).
    """
    from lofit.serve.main import adapter_specs, run

    if not 0 <= port <= 65535:
        raise ConfigError(f"port must be in 0..65535, got {port}")
    if max_batch < 1 or max_queue < 0:
        raise ConfigError(f"max_batch must be ≥ 1 and max_queue ≥ 0, got {max_batch} and {max_queue}")
    api_key = None
    if api_key_env is not None:
        api_key = os.environ.get(api_key_env, "")
        if not api_key:
            raise ConfigError(f"api_key_env: environment variable {api_key_env} is not set or empty")
    specs = adapter_specs(adapter, model_id)
    methods = {name: _check_edit_folder(path, backbone) for name, path in specs.items()}
    alone = [name for name, method in methods.items() if method != "lofit"]
    if alone and len(specs) > 1:
        raise ConfigError(
            f"adapter '{alone[0]}' ({specs[alone[0]]}) is a {methods[alone[0]]} edit: serve it alone, one per "
            "process (only LoFiT adapters can share a server)"
        )
    from lofit.serve.app import Limits  # fastapi and torch load only now

    limits = Limits(max_body_bytes=max_body_bytes, max_prompt_tokens=max_prompt_tokens, max_tokens=max_tokens)
    run(backbone, specs, model_id, host, port, limits=limits, api_key=api_key, max_batch=max_batch, max_queue=max_queue)


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
    "reft": reft,
}


# What a user's input or environment can cause: bad values (ConfigError and the ValueErrors lofit
# raises for malformed files), unreadable or missing paths, raw data that cannot be placed, and a
# judge that is absent or unreachable. Anything else is a bug in lofit or a library.
USER_ERRORS = (ValueError, OSError, DataSourceError, JudgeNotConfigured, JudgeAPIError)
DEBUG_ENV = "LOFIT_DEBUG"


def _one_line(err: BaseException) -> str:
    """The error's message with its lines joined (the contract is one line), or its type name."""
    return " ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__


def _repeated_adapters(argv: list[str]) -> list[str]:
    """`lofit serve --adapter a=P --adapter b=Q` serves both: jsonargparse keeps only the last
    value of a repeated flag, so for `serve` each `--adapter` becomes the appending `--adapter+`."""
    if "serve" not in argv or sum(arg == "--adapter" or arg.startswith("--adapter=") for arg in argv) < 2:
        return argv
    start = argv.index("serve") + 1
    rewritten = [arg.replace("--adapter", "--adapter+", 1) if arg == "--adapter" or arg.startswith("--adapter=") else arg for arg in argv[start:]]
    return argv[:start] + rewritten


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `lofit` console script.

    A user mistake exits 2 with one `lofit: error:` line; any other exception is a bug and exits
    1 with one line naming its type (a wall of traceback would bury the message), unless
    `LOFIT_DEBUG=1` asks for the traceback.
    """
    from jsonargparse import auto_cli

    prefer_passive_omp_wait()  # before any subcommand imports torch

    try:
        result = auto_cli(SUBCOMMANDS, args=_repeated_adapters(sys.argv[1:] if argv is None else list(argv)))
    except Exception as err:
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        if isinstance(err, USER_ERRORS):
            print(f"lofit: error: {_one_line(err)}", file=sys.stderr)
            raise SystemExit(2) from None
        print(
            f"lofit: error: internal error: {type(err).__name__}: {_one_line(err)} "
            f"(set {DEBUG_ENV}=1 for the traceback)",
            file=sys.stderr,
        )
        raise SystemExit(1) from None
    if result:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

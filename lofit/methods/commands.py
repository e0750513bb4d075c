"""`lofit iti|repe|lora|red|reft`: the baselines as CLI subcommands, shaped like `lofit select|tune`.

Each typed, documented signature is the subcommand's CLI and YAML schema. Training-free methods
(ITI, RepE) read the task's true/false answers on its train split (`Task.contrasts`) and pick
their settings on its val split with the task's own evaluator; trained ones
(LoRA, RED, ReFT) use LoFiT's data module, losses and Trainer. Every command writes a folder that
`lofit evaluate --adapter` (and generate/serve) loads without being told the method.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lofit.backbone import BackboneConfig
from lofit.io import write_json
from lofit.methods.configs import LoRAStepConfig, REDStepConfig, ReFTStepConfig
from lofit.methods.registry import METHODS
from lofit.methods.train import train_step
from lofit.errors import ConfigError
from lofit.training.config import DataConfig, TaskSpec, TrainerConfig, ValidationConfig

if TYPE_CHECKING:
    from lofit.backbone import Backbone
    from lofit.data.examples import ContrastQuestion
    from lofit.tasks.base import Task

SEARCH_FILE = "search.json"


def _contrast_task(task: TaskSpec) -> tuple[Task, list[ContrastQuestion]]:
    """The task and its train-split contrast questions, checked before any model loads (a task
    without true/false answers, or too few of them, is a one-line error)."""
    from lofit.methods.contrast import check_questions
    from lofit.training.run import build_task

    task_obj = build_task(task)
    questions = task_obj.contrasts("train")
    try:
        check_questions(questions)
    except ValueError as err:
        raise ConfigError(f"task '{task.name}' train split: {err}") from None
    return task_obj, questions


def _search(
    backbone: Backbone,
    task_obj: Task,
    candidates: list[dict[str, Any]],
    build: Callable[[Mapping[str, Any]], Any],
    val_limit: int | None,
    batch_size: int,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The task's validation scores (its `search_keys`) of the edit each candidate builds; the best
    candidate and all rows. Only the val split is scored: test never sees a candidate."""
    import torch

    from lofit.methods.search import best_on_validation

    def score(candidate: Mapping[str, Any]) -> dict[str, float]:
        edit = build(candidate)
        with edit.applied(backbone.model, backbone.family), torch.no_grad():
            return task_obj.evaluate(backbone, split="val", limit=val_limit, batch_size=batch_size)

    return best_on_validation(candidates, score, task_obj.search_keys())


def iti(
    task: TaskSpec,
    backbone: BackboneConfig = BackboneConfig(),
    top_k: tuple[int | float, ...] = (0.03,),
    alpha: tuple[float, ...] = (15.0,),
    seed: int = 42,
    val_limit: int | None = None,
    batch_size: int = 16,
    probe_steps: int = 300,
    output_dir: str = "outputs/iti",
) -> dict:
    """Inference-Time Intervention: probes on the train split, K and α chosen on the val split.

    Probes read the task's true/false statements (prompt + answer, in the task's prompt format):
    TruthfulQA's answers, or a files task's chosen/rejected sides (kind: dpo) or gold/other choices
    (evaluation: multiple_choice). Candidates are ranked by the task's evaluator on val (TruthfulQA:
    MC1, then MC2; files: `score`). Writes `adapter/` (a lofit offset adapter), `probes.json`
    (every head's probe accuracy, as a heads file for step-2 ablations) and `search.json` (the
    validation grid) into `output_dir`.

    Args:
        task: a task with true/false answers (truthfulqa, or files with kind dpo or multiple_choice).
        backbone: the frozen model.
        top_k: candidate head counts (int) or fractions of all heads (float).
        alpha: candidate strengths α ≥ 0.
        seed: seeds the probes' fit/validation question split.
        val_limit: score candidates on the first N val examples (None: all).
        batch_size: statements per forward pass, examples per evaluation batch.
        probe_steps: Adam steps of each logistic probe.
        output_dir: where the chosen edit goes.
    """
    from lofit.backbone import load_backbone
    from lofit.methods.iti import ITIFit, iti_intervention, probe_heads, save_iti
    from lofit.methods.search import grid

    task_obj, questions = _contrast_task(task)
    try:
        candidates = grid(top_k=list(top_k), alpha=list(alpha))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    model = load_backbone(backbone, task_obj.prompt_format)
    probes = probe_heads(model, questions, seed, batch_size=batch_size, probe_steps=probe_steps)

    def build(candidate: Mapping[str, Any]):
        return iti_intervention(probes, model, candidate["top_k"], candidate["alpha"])

    best, rows = _search(model, task_obj, candidates, build, val_limit, batch_size)
    chosen = build(best)
    save_iti(output_dir, ITIFit(chosen, probes.accuracies), model, best["alpha"], extra={"search": SEARCH_FILE})
    write_json(Path(output_dir) / SEARCH_FILE, {"keys": list(task_obj.search_keys()), "chosen": best, "grid": rows})
    return {"chosen": best, "heads": len(chosen.heads), "edited_parameters": chosen.num_trainable, "output_dir": output_dir}


def repe(
    task: TaskSpec,
    backbone: BackboneConfig = BackboneConfig(),
    top_layers: tuple[int | float, ...] = (0.25,),
    alpha: tuple[float, ...] = (4.0,),
    seed: int = 42,
    val_limit: int | None = None,
    batch_size: int = 16,
    output_dir: str = "outputs/repe",
) -> dict:
    """RepE reading vectors from train-split contrast pairs; layers and α chosen on the val split.

    Pairs are the task's true/false statements (prompt + answer, in the task's prompt format), as
    for `lofit iti`; candidates are ranked by the task's evaluator on val (TruthfulQA: MC1, then
    MC2; files: `score`). Writes `steering/` (vectors + config) and `search.json` (the validation
    grid) into `output_dir`.

    Args:
        task: a task with true/false answers (truthfulqa, or files with kind dpo or multiple_choice).
        backbone: the frozen model.
        top_layers: candidate steered-layer counts (int) or fractions of all layers (float).
        alpha: candidate steering strengths (residual-stream units; directions are unit-norm).
        seed: seeds the question split and the PCA sign flips.
        val_limit: score candidates on the first N val examples (None: all).
        batch_size: statements per forward pass, examples per evaluation batch.
        output_dir: where the chosen edit goes.
    """
    from lofit.backbone import load_backbone
    from lofit.methods.repe import fit_repe, save_steering, steering_for
    from lofit.methods.search import grid

    task_obj, questions = _contrast_task(task)
    try:
        candidates = grid(top_layers=list(top_layers), alpha=list(alpha))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    model = load_backbone(backbone, task_obj.prompt_format)
    fit = fit_repe(model, questions, top_layers[0], alpha[0], seed, batch_size=batch_size)

    def build(candidate: Mapping[str, Any]):
        return steering_for(model, fit.layer_accuracies, fit.directions, candidate["top_layers"], candidate["alpha"])

    best, rows = _search(model, task_obj, candidates, build, val_limit, batch_size)
    chosen = build(best)
    save_steering(chosen, Path(output_dir) / METHODS["repe"].edit_dir, model, extra={**best, "search": SEARCH_FILE})
    write_json(Path(output_dir) / SEARCH_FILE, {"keys": list(task_obj.search_keys()), "chosen": best, "grid": rows})
    return {"chosen": best, "layers": chosen.layers, "edited_parameters": chosen.num_edited, "output_dir": output_dir}


def lora(
    task: TaskSpec,
    lora: LoRAStepConfig = LoRAStepConfig(),
    backbone: BackboneConfig = BackboneConfig(),
    data: DataConfig = DataConfig(),
    trainer: TrainerConfig = TrainerConfig(),
    validation: ValidationConfig = ValidationConfig(),
    output_dir: str = "outputs/lora",
    ckpt_path: str | None = None,
) -> dict:
    """LoRA (peft) trained with LoFiT's loss for the task (SFT or DPO against the base model).

    Writes `lora/` (a standard peft adapter folder), `metrics.json`, checkpoints and a CSV log.

    Args:
        task: the task to train on.
        lora: rank, α, dropout, target modules, learning rate, seed.
        backbone: the frozen model.
        data: batching and truncation.
        trainer: epochs, devices, strategy, precision, clipping.
        validation: optional task metric on the val split.
        output_dir: run directory.
        ckpt_path: resume from this checkpoint.
    """
    return train_step("lora", task, lora, backbone, data, trainer, validation, output_dir, ckpt_path)


def red(
    task: TaskSpec,
    red: REDStepConfig = REDStepConfig(),
    backbone: BackboneConfig = BackboneConfig(),
    data: DataConfig = DataConfig(),
    trainer: TrainerConfig = TrainerConfig(),
    validation: ValidationConfig = ValidationConfig(),
    output_dir: str = "outputs/red",
    ckpt_path: str | None = None,
) -> dict:
    """RED: a scale and a bias on every layer's MLP output, trained with LoFiT's loss for the task.

    Writes `red/` (scales + biases + config), `metrics.json`, checkpoints and a CSV log.

    Args:
        task: the task to train on.
        red: learning rate, seed, DPO and checkpoint-choice settings.
        backbone: the frozen model.
        data: batching and truncation.
        trainer: epochs, devices, strategy, precision, clipping.
        validation: optional task metric on the val split.
        output_dir: run directory.
        ckpt_path: resume from this checkpoint.
    """
    return train_step("red", task, red, backbone, data, trainer, validation, output_dir, ckpt_path)


def reft(
    task: TaskSpec,
    reft: ReFTStepConfig = ReFTStepConfig(),
    backbone: BackboneConfig = BackboneConfig(),
    data: DataConfig = DataConfig(),
    trainer: TrainerConfig = TrainerConfig(),
    validation: ValidationConfig = ValidationConfig(),
    output_dir: str = "outputs/reft",
    ckpt_path: str | None = None,
) -> dict:
    """LoReFT: h + Rᵀ(Wh + b − Rh) at the first/last prompt positions of chosen layers, trained with LoFiT's loss.

    Writes `reft/` (R, W, b + config), `metrics.json`, checkpoints and a CSV log.

    Args:
        task: the task to train on.
        reft: rank, positions, layers, tying, init, learning rate, seed, DPO and checkpoint-choice settings.
        backbone: the frozen model.
        data: batching and truncation.
        trainer: epochs, devices, strategy, precision, clipping.
        validation: optional task metric on the val split.
        output_dir: run directory.
        ckpt_path: resume from this checkpoint.
    """
    return train_step("reft", task, reft, backbone, data, trainer, validation, output_dir, ckpt_path)

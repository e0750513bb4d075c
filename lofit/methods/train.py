"""The one body of the training subcommands (`lofit select|tune|lora|red|reft`).

Each subcommand keeps its own typed signature (its CLI and YAML schema) and hands its step
config here with its name; the registry says which module trains and what to check first.
Order of work, the same for every method: refuse a missing or unsafe checkpoint and a bad
trainer section, choose step 2's heads from its heads file (read once, checked against the
model's config), seed and resolve the task (its data read and checked), load the backbone,
build the module, fit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lofit.methods.registry import TRAINING_STEPS, import_attribute

if TYPE_CHECKING:
    from lofit.backbone import BackboneConfig
    from lofit.training.config import DataConfig, StepConfig, TaskSpec, TrainerConfig, ValidationConfig


def train_step(
    command: str,
    task: TaskSpec,
    config: StepConfig,
    backbone: BackboneConfig,
    data: DataConfig,
    trainer: TrainerConfig,
    validation: ValidationConfig,
    output_dir: str,
    ckpt_path: str | None,
) -> dict[str, Any]:
    """Train the module of subcommand `command` and return its final metrics (also in metrics.json)."""
    from lofit.training.run import check_heads_file, check_resume, check_trainer, fit, load_for_training

    step = TRAINING_STEPS[command]
    check_resume(ckpt_path)
    check_trainer(trainer)
    options: dict[str, Any] = {"task_name": task.name} if step.records_task else {}
    if step.reads_heads:
        options["top_heads"] = check_heads_file(config.heads, config.top_k, backbone)
    task_obj, loss, model = load_for_training(task, backbone, config.seed)
    module = import_attribute(step.module)(model, loss, config, output_dir, **options)
    return fit(module, task_obj, data, trainer, validation, output_dir, ckpt_path)

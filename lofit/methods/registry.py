"""Every method in one table: its edit folder, how the folder is saved and loaded, how it trains.

Loading an edit (`lofit.methods.loading`), the comparison pipeline's folder table and the training
subcommands (`lofit select|tune|lora|red|reft`) all read `METHODS`, so adding a method is one entry
here plus its module. Functions and classes are named by import path (`module:attribute`) and
imported on use: reading this table loads neither torch nor transformers.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


def import_attribute(path: str) -> Any:
    """The object that `module:attribute` names."""
    module_name, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


@dataclass(frozen=True)
class EditFormat:
    """The files of a saved edit folder.

    Args:
        config_file: the JSON that says what the folder holds (how the folder is recognised).
        weights_file: the safetensors file beside it.
        save: `module:function` that writes the folder.
        load: `module:function(path, backbone)` that rebuilds the edit, detached.
        peft_type: the config's `peft_type` for a peft folder; None for lofit's own formats
            (a lofit adapter has no `peft_type`, which tells it apart from a LoRA folder).
    """

    config_file: str
    weights_file: str
    save: str
    load: str
    peft_type: str | None = None

    def matches(self, config: Mapping[str, Any]) -> bool:
        """Whether a parsed `config_file` is this format's."""
        return config.get("peft_type") == self.peft_type


@dataclass(frozen=True)
class TrainingStep:
    """A training subcommand: its LightningModule and what the shared body must do for it.

    Args:
        command: the `lofit` subcommand.
        module: `module:Class`, built as `Class(backbone, loss, config, output_dir, ...)`.
        reads_heads: the step's K heads are chosen from its `heads` file before the backbone loads
            and handed to the module as `top_heads`.
        records_task: the module also takes `task_name` (written into its product).
    """

    command: str
    module: str
    reads_heads: bool = False
    records_task: bool = False


@dataclass(frozen=True)
class Method:
    """One method: the subcommand that makes it, its edit folder inside the run folder, its steps.

    Args:
        name: what `edit_method` returns for its folder (ITI's folder is a lofit adapter: `lofit`).
        command: the `lofit` subcommand that writes the edit.
        edit_dir: the edit's folder inside the command's `output_dir`.
        edit: the files of that folder.
        steps: training subcommands in order (none for the training-free ITI and RepE).
    """

    name: str
    command: str
    edit_dir: str
    edit: EditFormat
    steps: tuple[TrainingStep, ...] = ()


LOFIT_ADAPTER = EditFormat(
    config_file="adapter_config.json",
    weights_file="adapter.safetensors",
    save="lofit.adapter:save_adapter",
    load="lofit.adapter:load_adapter",
)
LORA_ADAPTER = EditFormat(
    config_file="adapter_config.json",
    weights_file="adapter_model.safetensors",
    save="lofit.methods.lora:save_lora",
    load="lofit.methods.lora:load_lora",
    peft_type="LORA",
)
RED_EDIT = EditFormat(
    config_file="red_config.json",
    weights_file="red.safetensors",
    save="lofit.methods.red:save_red",
    load="lofit.methods.red:load_red",
)
REFT_EDIT = EditFormat(
    config_file="reft_config.json",
    weights_file="reft.safetensors",
    save="lofit.methods.reft:save_reft",
    load="lofit.methods.reft:load_reft",
)
STEERING = EditFormat(
    config_file="steering_config.json",
    weights_file="steering.safetensors",
    save="lofit.methods.repe:save_steering",
    load="lofit.methods.repe:load_steering",
)

METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method(
            "lofit",
            command="tune",
            edit_dir="adapter",
            edit=LOFIT_ADAPTER,
            steps=(
                TrainingStep("select", "lofit.training.selection:HeadSelectionModule", records_task=True),
                TrainingStep("tune", "lofit.training.tuning:BiasTuningModule", reads_heads=True),
            ),
        ),
        Method("iti", command="iti", edit_dir="adapter", edit=LOFIT_ADAPTER),
        Method("repe", command="repe", edit_dir="steering", edit=STEERING),
        Method("lora", command="lora", edit_dir="lora", edit=LORA_ADAPTER,
               steps=(TrainingStep("lora", "lofit.methods.lora:LoRAModule"),)),
        Method("red", command="red", edit_dir="red", edit=RED_EDIT,
               steps=(TrainingStep("red", "lofit.methods.red:REDModule"),)),
        Method("reft", command="reft", edit_dir="reft", edit=REFT_EDIT,
               steps=(TrainingStep("reft", "lofit.methods.reft:ReFTModule"),)),
    )
}

TRAINING_STEPS: dict[str, TrainingStep] = {step.command: step for method in METHODS.values() for step in method.steps}
# Edit formats in the order a folder is recognised (a lofit adapter and a LoRA folder share a config name)
EDIT_FORMATS: dict[str, EditFormat] = {name: METHODS[name].edit for name in ("lofit", "lora", "red", "reft", "repe")}

"""Load any saved edit (LoFiT/ITI adapter, LoRA, RED, RepE steering) from its folder.

Every method writes a folder whose config file says what it is, so evaluation, generation,
serving and the comparison pipeline take "an edit folder" and need not be told the method.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lofit.io import read_json

if TYPE_CHECKING:
    from lofit.backbone import Backbone

LOFIT_CONFIG = "adapter_config.json"  # shared by lofit adapters and peft adapters (told apart by `peft_type`)
RED_CONFIG = "red_config.json"
STEERING_CONFIG = "steering_config.json"


def edit_method(path: str | Path) -> str:
    """`lofit` (also ITI, which is saved as a lofit adapter), `lora`, `red` or `repe`."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"edit folder {path}: not found")
    if (path / LOFIT_CONFIG).is_file():
        config = read_json(path / LOFIT_CONFIG)
        if config.get("peft_type") == "LORA":
            return "lora"
        if "peft_type" in config:
            raise ValueError(f"{path / LOFIT_CONFIG}: peft adapter type {config['peft_type']!r} is not supported (LoRA only)")
        return "lofit"
    if (path / RED_CONFIG).is_file():
        return "red"
    if (path / STEERING_CONFIG).is_file():
        return "repe"
    raise ValueError(
        f"{path}: not an edit folder (expected {LOFIT_CONFIG}, {RED_CONFIG} or {STEERING_CONFIG} inside)"
    )


def load_edit(path: str | Path, backbone: Backbone) -> Any:
    """The saved edit rebuilt for `backbone`, detached; use `edit.applied(model, family)` to switch it on."""
    method = edit_method(path)
    if method == "lofit":
        from lofit.adapter import load_adapter

        return load_adapter(path, backbone)
    if method == "lora":
        from lofit.methods.lora import load_lora

        return load_lora(path, backbone)
    if method == "red":
        from lofit.methods.red import load_red

        return load_red(path, backbone)
    from lofit.methods.repe import load_steering

    return load_steering(path, backbone)


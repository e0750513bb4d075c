"""Load any saved edit (LoFiT/ITI adapter, LoRA, RED, ReFT, RepE steering) from its folder.

Every method writes a folder whose config file says what it is (`registry.EDIT_FORMATS`), so
evaluation, generation, serving and the comparison pipeline take "an edit folder" and need not be
told the method.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lofit.io import read_json
from lofit.methods.registry import EDIT_FORMATS, import_attribute

if TYPE_CHECKING:
    from lofit.backbone import Backbone


def edit_method(path: str | Path) -> str:
    """`lofit` (also ITI, which is saved as a lofit adapter), `lora`, `red`, `reft` or `repe`."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"edit folder {path}: not found")
    for name, edit in EDIT_FORMATS.items():
        file = path / edit.config_file
        if file.is_file() and edit.matches(read_json(file)):
            return name
    for file in dict.fromkeys(path / edit.config_file for edit in EDIT_FORMATS.values() if edit.peft_type):
        if file.is_file() and "peft_type" in (config := read_json(file)):
            supported = ", ".join(name for name, edit in EDIT_FORMATS.items() if edit.peft_type)
            raise ValueError(f"{file}: peft adapter type {config['peft_type']!r} is not supported (only {supported})")
    names = list(dict.fromkeys(edit.config_file for edit in EDIT_FORMATS.values()))
    raise ValueError(f"{path}: not an edit folder (expected {', '.join(names[:-1])} or {names[-1]} inside)")


def load_edit(path: str | Path, backbone: Backbone) -> Any:
    """The saved edit rebuilt for `backbone`, detached; use `edit.applied(model, family)` to switch it on."""
    return import_attribute(EDIT_FORMATS[edit_method(path)].load)(path, backbone)

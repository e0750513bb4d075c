"""The adapter format: `adapter.safetensors` + `adapter_config.json`, no pickle.

Tensors hold one row per chosen head, in importance order (`scale` and/or `offset`, shape
K × head_dim); the config records the base model's family and shape so that loading onto another
model fails with a clear message instead of silently mis-indexing heads, and the prompt format
the adapter was trained with (`prompt_format`, written only when a chat template was used; an
absent one is off), so a server shows prompts to it as training did.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lofit import __version__
from lofit.data.prompt_format import PromptFormat, prompt_format_from_record
from lofit.families import HeadGeometry, head_geometry
from lofit.intervention import COMPONENTS, HeadIntervention
from lofit.io import atomic_path, read_json, write_json

WEIGHTS_NAME = "adapter.safetensors"
CONFIG_NAME = "adapter_config.json"


@dataclass
class AdapterConfig:
    """What an adapter is and which model it belongs to."""

    base_model: str
    model_type: str
    num_layers: int
    num_heads: int
    head_dim: int
    components: list[str]
    heads: list[list[int]]
    head_scores: list[float] | None = None
    dtype: str = "float32"
    method: str = "lofit"
    lofit_version: str = __version__
    extra: dict = field(default_factory=dict)
    prompt_format: dict | None = None

    @property
    def geometry(self) -> HeadGeometry:
        return HeadGeometry(self.num_layers, self.num_heads, self.head_dim)

    @property
    def prompt(self) -> PromptFormat:
        """The prompt format of training (off for adapters that recorded none)."""
        return prompt_format_from_record(self.prompt_format, CONFIG_NAME)


def save_adapter(
    intervention: HeadIntervention,
    path: str | Path,
    base_model: str,
    head_scores: list[float] | None = None,
    *,
    model_type: str,
    extra: dict | None = None,
    prompt_format: PromptFormat = PromptFormat(),
) -> Path:
    """Write the intervention's chosen-head vectors and its config into folder `path`."""
    path = Path(path)
    if head_scores is not None and len(head_scores) != len(intervention.heads):
        raise ValueError(f"{len(head_scores)} head scores for {len(intervention.heads)} heads")
    tensors = {name: intervention.head_rows(name).float().contiguous() for name in intervention.components}
    for name, rows in tensors.items():
        _check_finite(rows, f"{path / WEIGHTS_NAME}: tensor '{name}'")
    if head_scores is not None and not all(math.isfinite(float(s)) for s in head_scores):
        raise ValueError(f"{path / CONFIG_NAME}: head_scores hold NaN or Inf values")
    geometry = intervention.geometry
    config = AdapterConfig(
        base_model=base_model,
        model_type=model_type,
        num_layers=geometry.num_layers,
        num_heads=geometry.num_heads,
        head_dim=geometry.head_dim,
        components=list(intervention.components),
        heads=[list(h) for h in intervention.heads],
        head_scores=None if head_scores is None else [float(s) for s in head_scores],
        extra=extra or {},
        prompt_format=prompt_format.to_record(),
    )
    record = asdict(config)
    if record["prompt_format"] is None:
        del record["prompt_format"]  # an adapter trained on plain prompts keeps the older file, byte for byte
    path.mkdir(parents=True, exist_ok=True)
    with atomic_path(path / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "lofit"})
    write_json(path / CONFIG_NAME, record)
    return path


def read_adapter_config(path: str | Path) -> AdapterConfig:
    """Parse and validate `adapter_config.json` in folder `path`."""
    file = Path(path) / CONFIG_NAME
    raw = read_json(file)
    try:
        config = AdapterConfig(**raw)
    except TypeError as err:
        raise ValueError(f"{file}: not a lofit adapter config ({err})") from None
    if config.prompt_format is not None and not isinstance(config.prompt_format, dict):
        raise ValueError(f"{file}: prompt_format must be an object, got {config.prompt_format!r}")
    prompt_format_from_record(config.prompt_format, str(file))  # a bad record fails on reading, naming the file
    bad = set(config.components) - set(COMPONENTS)
    if bad or not config.components:
        raise ValueError(f"{file}: components must be a non-empty subset of {COMPONENTS}, got {config.components}")
    return config


def _check_geometry(config: AdapterConfig, geometry: HeadGeometry, source: str) -> None:
    if config.geometry != geometry:
        raise ValueError(
            f"{source}: adapter is for {config.num_layers} layers × {config.num_heads} heads × "
            f"{config.head_dim} dims ({config.base_model}), but the model has {geometry.num_layers} × "
            f"{geometry.num_heads} × {geometry.head_dim}"
        )


def check_adapter_geometry(path: str | Path, model_folder: str | Path) -> None:
    """Before any weights load: the adapter's head geometry against a model folder's config.json."""
    from transformers import AutoConfig

    config = read_adapter_config(path)
    _check_geometry(config, head_geometry(AutoConfig.from_pretrained(model_folder)), str(Path(path) / CONFIG_NAME))


def check_compatible(config: AdapterConfig, geometry: HeadGeometry, model_type: str, source: str) -> None:
    """Fail with a clear message when an adapter was made for a differently shaped model."""
    _check_geometry(config, geometry, source)
    if config.model_type != model_type:
        raise ValueError(f"{source}: adapter is for model_type '{config.model_type}', the model is '{model_type}'")


def _check_finite(tensor: torch.Tensor, what: str) -> None:
    """A NaN/Inf entry would silently turn every edited activation into NaN: refuse it."""
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{what} holds NaN or Inf values")


def read_weights(file: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a missing, truncated or corrupt file or a non-finite
    tensor is a ValueError/FileNotFoundError naming the file (and the tensor)."""
    file = Path(file)
    if not file.is_file():
        raise FileNotFoundError(f"{file}: file not found")
    try:
        tensors = load_file(str(file))
    except SafetensorError as err:
        raise ValueError(f"{file}: not a readable safetensors file (truncated or corrupt?): {err}") from None
    for name, tensor in tensors.items():
        _check_finite(tensor, f"{file}: tensor '{name}'")
    return tensors


def load_adapter(path: str | Path, backbone) -> HeadIntervention:
    """Rebuild a saved intervention for `backbone` (not attached: call `.attach(backbone.model)`)."""
    path = Path(path)
    config = read_adapter_config(path)
    check_compatible(config, backbone.geometry, backbone.model.config.model_type, str(path / CONFIG_NAME))
    weights_file = path / WEIGHTS_NAME
    tensors = read_weights(weights_file)
    if set(tensors) != set(config.components):
        raise ValueError(f"{weights_file}: holds {sorted(tensors)}, config says {config.components}")
    intervention = HeadIntervention(backbone.geometry, components=config.components, heads=config.heads)
    for name, rows in tensors.items():
        try:
            intervention.load_head_rows(name, rows)
        except ValueError as err:
            raise ValueError(f"{weights_file}: {err}") from None
    device = next(backbone.model.parameters()).device
    return intervention.to(device)

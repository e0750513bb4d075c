"""RED (Wu et al. 2024, "Advancing parameter efficiency in fine-tuning via representation editing").

Each decoder layer l gets a learnable scaling vector l_s and bias l_b of the hidden size, applied
to the output h of its feed-forward sub-layer: h ← l_s ⊙ h + l_b, with l_s = 1 and l_b = 0 at
initialisation (exactly the base model). All pretrained weights stay frozen; trainable
parameters = 2 × layers × hidden size.

Edit site. The FFN sub-layer's output is the `mlp` module's output in every supported family
except Gemma 3, which normalises it again (`post_feedforward_layernorm`) before adding it to the
residual stream; there the edit is placed on that norm's output, so that the norm cannot undo the
scaling. `FFN_OUTPUT_PATHS` holds this per-family choice (families.py is left untouched: only RED
needs it); a family not listed uses `mlp`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.hooks import RemovableHandle

from lofit.backbone import Backbone
from lofit.data.examples import LossKind
from lofit.families import FamilySpec, UnsupportedArchitectureError, decoder_layers, family_for, text_config
from lofit.hooks import HookedEdit
from lofit.io import atomic_path, read_json, write_json
from lofit.methods.configs import REDStepConfig
from lofit.methods.module import EditModule
from lofit.methods.registry import METHODS

FFN_OUTPUT_PATHS: dict[str, str] = {"gemma3": "post_feedforward_layernorm"}
DEFAULT_FFN_OUTPUT = "mlp"
RED_DIR = METHODS["red"].edit_dir
WEIGHTS_NAME = METHODS["red"].edit.weights_file
CONFIG_NAME = METHODS["red"].edit.config_file
RED_FORMAT = "lofit-red"


def ffn_outputs(model: nn.Module, family: FamilySpec | None = None) -> list[nn.Module]:
    """The module whose output is each layer's FFN contribution to the residual stream, in layer order."""
    family = family or family_for(model.config.model_type)
    path = FFN_OUTPUT_PATHS.get(family.name, DEFAULT_FFN_OUTPUT)
    modules = []
    for index, layer in enumerate(decoder_layers(model, family)):
        try:
            module = layer.get_submodule(path)
        except AttributeError:
            raise UnsupportedArchitectureError(
                f"layer {index} of {type(model).__name__} has no '{path}' (family '{family.name}'); "
                "add the family to FFN_OUTPUT_PATHS in lofit/methods/red.py"
            ) from None
        modules.append(module)
    return modules


class REDIntervention(HookedEdit, nn.Module):
    """Per-layer scale l_s (init 1) and bias l_b (init 0) on the FFN output; `scale`, `bias` are (layers, hidden)."""

    def __init__(self, num_layers: int, hidden_size: int) -> None:
        super().__init__()
        if num_layers <= 0 or hidden_size <= 0:
            raise ValueError(f"RED needs positive layers and hidden size, got {num_layers} × {hidden_size}")
        self.num_layers, self.hidden_size = num_layers, hidden_size
        self.scale = nn.Parameter(torch.ones(num_layers, hidden_size))
        self.bias = nn.Parameter(torch.zeros(num_layers, hidden_size))
        self._init_hooks()

    @classmethod
    def for_backbone(cls, backbone: Backbone) -> REDIntervention:
        layers = len(decoder_layers(backbone.model, backbone.family))
        return cls(layers, text_config(backbone.model.config).hidden_size)

    @property
    def num_trainable(self) -> int:
        """2 × layers × hidden size."""
        return self.scale.numel() + self.bias.numel()

    def signature(self) -> dict[str, Any]:
        return {"num_layers": self.num_layers, "hidden_size": self.hidden_size}

    def _hook(self, layer: int):
        def hook(_module: nn.Module, _args: tuple, output):
            if not self.enabled:
                return None
            hidden = output[0] if isinstance(output, tuple) else output
            hidden = hidden * self.scale[layer].to(hidden.dtype) + self.bias[layer].to(hidden.dtype)
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

        return hook

    def _register(self, model: nn.Module, family: FamilySpec | None) -> list[RemovableHandle]:
        sites = ffn_outputs(model, family)
        if len(sites) != self.num_layers:
            raise ValueError(f"RED has {self.num_layers} layers, the model {len(sites)}")
        return [site.register_forward_hook(self._hook(layer)) for layer, site in enumerate(sites)]


class REDModule(EditModule):
    """Trains RED's scales and biases with LoFiT's losses and loop; exports `red/`.

    Args:
        backbone: the frozen model.
        loss: the task's loss kind (`sft` or `dpo`).
        config: optimiser, DPO and checkpoint-choice settings.
        output_dir: where rank 0 writes `red/` at the end of fit.
    """

    method = "red"

    def __init__(
        self,
        backbone: Backbone,
        loss: LossKind,
        config: REDStepConfig | None = None,
        output_dir: str | Path | None = None,
    ) -> None:
        super().__init__(backbone, REDIntervention.for_backbone(backbone), loss, config or REDStepConfig(), output_dir)

    def export(self, out_dir: Path) -> None:
        save_red(self.intervention, out_dir / RED_DIR, self.backbone)


@dataclass
class REDConfig:
    """What a saved RED edit is and which model it belongs to."""

    base_model: str
    model_type: str
    num_layers: int
    hidden_size: int
    method: str = "red"
    format: str = RED_FORMAT


def save_red(intervention: REDIntervention, path: str | Path, backbone: Backbone) -> Path:
    """Write `red.safetensors` (scale, bias) and `red_config.json` into folder `path`."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {name: getattr(intervention, name).detach().float().cpu().contiguous() for name in ("scale", "bias")}
    with atomic_path(path / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp), metadata={"format": RED_FORMAT})
    config = REDConfig(backbone.name, backbone.model.config.model_type, intervention.num_layers, intervention.hidden_size)
    write_json(path / CONFIG_NAME, asdict(config))
    return path


def load_red(path: str | Path, backbone: Backbone) -> REDIntervention:
    """Rebuild a saved RED edit for `backbone` (not attached); a clear error for another model's edit."""
    path = Path(path)
    raw = read_json(path / CONFIG_NAME)
    if raw.get("format") != RED_FORMAT:
        raise ValueError(f"{path / CONFIG_NAME}: not a {RED_FORMAT} config")
    config = REDConfig(**raw)
    intervention = REDIntervention.for_backbone(backbone)
    if (config.num_layers, config.hidden_size) != (intervention.num_layers, intervention.hidden_size):
        raise ValueError(
            f"{path}: RED edit is for {config.num_layers} layers × {config.hidden_size} ({config.base_model}), "
            f"the model has {intervention.num_layers} × {intervention.hidden_size}"
        )
    tensors = load_file(str(path / WEIGHTS_NAME))
    with torch.no_grad():
        for name in ("scale", "bias"):
            getattr(intervention, name).copy_(tensors[name])
    return intervention.to(next(backbone.model.parameters()).device)

"""LoRA (Hu et al. 2022) through `peft`, trained with exactly LoFiT's losses, batches and loop.

`LoRAAdapter` asks peft (`inject_adapter_in_model`) to build its LoRA layers around the target
linear modules, keeps those wrappers, and puts the original modules back: the backbone is left
untouched until `attach` swaps the wrappers in (and `detach` swaps them out), the same
attach/detach/disabled life cycle as `HeadIntervention`. Disabling (the DPO reference pass) uses
peft's own adapter switch, so the reference is exactly the base model.

Only the LoRA matrices are registered on the adapter (never the wrapped base weights), so
Lightning checkpoints hold the LoRA weights alone. The export is a standard peft adapter folder
(`adapter_config.json` + `adapter_model.safetensors`) that `peft.PeftModel.from_pretrained` loads.

Trainable parameters: Σ over adapted linear layers of r × (in_features + out_features).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file, save_file
from torch import nn

from lofit.backbone import Backbone
from lofit.data.examples import LossKind
from lofit.families import FamilySpec
from lofit.io import atomic_path
from lofit.methods.configs import DEFAULT_TARGETS, LoRAStepConfig, check_lora_settings
from lofit.methods.module import EditModule
from lofit.methods.registry import METHODS

ADAPTER_NAME = "default"
LORA_DIR = METHODS["lora"].edit_dir
WEIGHTS_NAME = METHODS["lora"].edit.weights_file
PEFT_PREFIX = "base_model.model."


def matches_target(name: str, targets: Sequence[str]) -> bool:
    """peft's rule for a list of target names: the module's name is a target or ends with ".target"."""
    return any(name == target or name.endswith("." + target) for target in targets)


def lora_parameter_count(model: nn.Module, target_modules: Sequence[str], r: int) -> int:
    """r × (in + out) summed over the model's `nn.Linear` modules that `target_modules` names."""
    return sum(
        r * (module.in_features + module.out_features)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and matches_target(name, target_modules)
    )


class _LoRAParts(nn.Module):
    """The trainable pieces of one peft LoRA layer (shared with it), without its base weights."""

    def __init__(self, layer: LoraLayer) -> None:
        super().__init__()
        self.lora_A = layer.lora_A
        self.lora_B = layer.lora_B
        self.lora_dropout = layer.lora_dropout


class LoRAAdapter(nn.Module):
    """peft LoRA layers for the target linear modules of `model`, swapped in by `attach`.

    Args:
        model: the frozen backbone model the adapter belongs to (left unchanged by construction).
        r: LoRA rank.
        lora_alpha: scaling numerator; the update is (lora_alpha / r) · B A x.
        lora_dropout: dropout on the LoRA branch's input while training.
        target_modules: names of the linear modules to adapt (peft's suffix matching).
        seed: seeds peft's initialisation of A (B starts at 0, so the adapter starts as the identity).
    """

    def __init__(
        self,
        model: nn.Module,
        r: int = 8,
        lora_alpha: float = 16.0,
        lora_dropout: float = 0.0,
        target_modules: Sequence[str] = DEFAULT_TARGETS,
        seed: int = 42,
    ) -> None:
        super().__init__()
        check_lora_settings(r, lora_alpha, lora_dropout, target_modules)
        self.config = LoraConfig(
            r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=list(target_modules), bias="none"
        )
        if any(isinstance(module, LoraLayer) for module in model.modules()):
            raise ValueError("the model already holds LoRA layers; use a fresh backbone")
        had_config = hasattr(model, "peft_config")
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                inject_adapter_in_model(self.config, model, adapter_name=ADAPTER_NAME)
        except ValueError as err:
            raise ValueError(f"LoRA target_modules {list(target_modules)}: {str(err).splitlines()[0]}") from None
        if not had_config and hasattr(model, "peft_config"):
            del model.peft_config
        self._model = [model]  # a list: not a submodule, never in the state dict
        self._sites: list[tuple[str, nn.Module, str, nn.Module, nn.Module]] = []
        for name, module in list(model.named_modules()):
            if isinstance(module, LoraLayer):
                parent_name, _, child = name.rpartition(".")
                parent = model.get_submodule(parent_name) if parent_name else model
                self._sites.append((name, parent, child, module, module.get_base_layer()))
        self.names = [site[0] for site in self._sites]
        self.parts = nn.ModuleList(_LoRAParts(site[3]) for site in self._sites)
        self._attached = True
        self.detach()
        self.eval()  # like the frozen backbone; Lightning switches to train mode for training steps

    # ------------------------------------------------------------------ facts
    @property
    def num_trainable(self) -> int:
        """Σ r × (in + out) over the adapted layers."""
        return sum(param.numel() for param in self.parameters())

    def signature(self) -> dict[str, Any]:
        return {
            "r": self.config.r,
            "lora_alpha": self.config.lora_alpha,
            "targets": list(self.names),
        }

    # ------------------------------------------------------------------ life cycle
    def attach(self, model: nn.Module, family: FamilySpec | None = None) -> LoRAAdapter:
        """Swap the LoRA wrappers in place of the target modules (family is unused: names locate them)."""
        if self._attached:
            raise RuntimeError("LoRA is already attached; detach() it first")
        if model is not self._model[0]:
            raise ValueError("a LoRAAdapter attaches only to the model it was built on")
        for _, parent, child, wrapper, _ in self._sites:
            setattr(parent, child, wrapper)
        self._attached = True
        return self

    def detach(self) -> None:
        if not self._attached:
            return
        for _, parent, child, _, base in self._sites:
            setattr(parent, child, base)
        self._attached = False

    @property
    def attached(self) -> bool:
        return self._attached

    @contextmanager
    def disabled(self) -> Iterator[None]:
        """The base model while the wrappers stay in place (DPO reference passes), via peft's switch."""
        wrappers = [site[3] for site in self._sites]
        for wrapper in wrappers:
            wrapper.enable_adapters(False)
        try:
            yield
        finally:
            for wrapper in wrappers:
                wrapper.enable_adapters(True)

    @contextmanager
    def applied(self, model: nn.Module, family: FamilySpec | None = None) -> Iterator[LoRAAdapter]:
        self.attach(model, family)
        try:
            yield self
        finally:
            self.detach()

    def train(self, mode: bool = True) -> LoRAAdapter:
        """Also set the wrappers' own mode (their dropout lives in `parts`, which `super().train` covers)."""
        super().train(mode)
        for site in self._sites:
            site[3].training = mode
        return self

    # ------------------------------------------------------------------ weights
    def peft_state_dict(self) -> dict[str, torch.Tensor]:
        """LoRA weights under peft's saved key names (`base_model.model.<module>.lora_A.weight`)."""
        tensors = {}
        for name, parts in zip(self.names, self.parts):
            for kind in ("lora_A", "lora_B"):
                weight = getattr(parts, kind)[ADAPTER_NAME].weight
                tensors[f"{PEFT_PREFIX}{name}.{kind}.weight"] = weight.detach().float().cpu().contiguous()
        return tensors

    def load_peft_state_dict(self, tensors: dict[str, torch.Tensor], source: str = "LoRA weights") -> None:
        expected = set(self.peft_state_dict())
        if set(tensors) != expected:
            missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
            raise ValueError(f"{source}: keys do not match the adapter (missing {missing[:3]}, unexpected {extra[:3]})")
        with torch.no_grad():
            for name, parts in zip(self.names, self.parts):
                for kind in ("lora_A", "lora_B"):
                    target = getattr(parts, kind)[ADAPTER_NAME].weight
                    value = tensors[f"{PEFT_PREFIX}{name}.{kind}.weight"]
                    if value.shape != target.shape:
                        raise ValueError(f"{source}: {name}.{kind} has shape {tuple(value.shape)}, expected {tuple(target.shape)}")
                    target.copy_(value)


class LoRAModule(EditModule):
    """Trains LoRA with LoFiT's losses and loop (DPO reference: the base model, adapters disabled); exports `lora/`.

    Args:
        backbone: the frozen model (LoRA wrappers are built around its target modules).
        loss: the task's loss kind (`sft` or `dpo`).
        config: LoRA shape, optimiser, DPO and checkpoint-choice settings.
        output_dir: where rank 0 writes the peft adapter folder `lora/` at the end of fit.
    """

    method = "lora"

    def __init__(
        self,
        backbone: Backbone,
        loss: LossKind,
        config: LoRAStepConfig | None = None,
        output_dir: str | Path | None = None,
    ) -> None:
        config = config or LoRAStepConfig()
        adapter = LoRAAdapter(
            backbone.model, config.r, config.lora_alpha, config.lora_dropout, config.target_modules, config.seed
        )
        super().__init__(backbone, adapter, loss, config, output_dir)

    def export(self, out_dir: Path) -> None:
        save_lora(self.intervention, out_dir / LORA_DIR, self.backbone.name)


def save_lora(adapter: LoRAAdapter, path: str | Path, base_model: str) -> Path:
    """A peft adapter folder: `adapter_config.json` + `adapter_model.safetensors`."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = copy.copy(adapter.config)
    config.base_model_name_or_path = base_model
    config.save_pretrained(str(path))
    with atomic_path(path / WEIGHTS_NAME) as tmp:
        save_file(adapter.peft_state_dict(), str(tmp), metadata={"format": "pt"})
    return path


def load_lora(path: str | Path, backbone: Backbone) -> LoRAAdapter:
    """Rebuild a saved LoRA adapter (ours or any peft LoRA folder of the same shape) on `backbone`, detached."""
    path = Path(path)
    config = LoraConfig.from_pretrained(str(path))
    targets = sorted(config.target_modules) if not isinstance(config.target_modules, str) else [config.target_modules]
    adapter = LoRAAdapter(backbone.model, config.r, config.lora_alpha, 0.0, targets)
    adapter.load_peft_state_dict(load_file(str(path / WEIGHTS_NAME)), source=str(path / WEIGHTS_NAME))
    return adapter

"""Lightning glue for trainable baselines that are not head interventions (LoRA, RED).

`lofit.training.module.InterventionModule` already holds everything a baseline must share with
LoFiT to be a fair comparison: the batch format, the SFT and DPO losses (the DPO reference is the
base model, read with the edit disabled and cached once per example), the logging names, AdamW
with linear decay and no warmup, `keep: last|best`, and `metrics.json`. It only needs its
`intervention` to follow the small protocol below, so the baselines subclass it and replace just
the checkpoint bookkeeping that is specific to head interventions.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol

from torch import nn

from lofit.families import FamilySpec
from lofit.errors import ConfigError
from lofit.training.module import InterventionModule


class TrainableEdit(Protocol):
    """What `InterventionModule` asks of its `intervention` (HeadIntervention, LoRAAdapter, REDIntervention)."""

    def attach(self, model: nn.Module, family: FamilySpec | None = None) -> Any: ...

    def detach(self) -> None: ...

    @property
    def attached(self) -> bool: ...

    def disabled(self) -> AbstractContextManager[None]: ...

    @property
    def num_trainable(self) -> int: ...

    def signature(self) -> dict[str, Any]:
        """JSON-able description that must match for a checkpoint to be resumed."""
        ...

    def parameters(self) -> Iterator[nn.Parameter]: ...


def trainable_parameters(*modules: nn.Module) -> int:
    """Number of distinct parameters with `requires_grad` across `modules` (shared ones counted once)."""
    seen: dict[int, int] = {}
    for module in modules:
        for param in module.parameters():
            if param.requires_grad:
                seen[id(param)] = param.numel()
    return sum(seen.values())


class EditModule(InterventionModule):
    """`InterventionModule` for a `TrainableEdit`; subclasses set `method` and implement `export`."""

    method = "edit"

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lofit"] = {
            "method": self.method,
            "signature": self.intervention.signature(),
            "reference_logps": {split: dict(cache) for split, cache in self.reference_logps.items()},
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta = checkpoint.get("lofit")
        if meta is None or meta.get("method") != self.method:
            raise ConfigError(f"the checkpoint was not written by a lofit {self.method} training run")
        if meta["signature"] != self.intervention.signature():
            raise ConfigError(f"the checkpoint belongs to another {self.method} setup; resume with the run's own config")
        self.reference_logps = {split: dict(cache) for split, cache in meta["reference_logps"].items()}

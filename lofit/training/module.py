"""What both LoFiT steps share: a frozen backbone, a trainable intervention, the task loss.

The backbone is held as a plain attribute, not a submodule, so Lightning never saves, moves,
casts or DDP-synchronises its weights: checkpoints hold only the intervention vectors (KBs), the
optimizer, the scheduler and the DPO reference cache. The intervention is a submodule, so its
gradients are all-reduced under DDP and it follows the strategy's device.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import torch

from lofit.backbone import Backbone
from lofit.data.examples import LossKind
from lofit.intervention import HeadIntervention
from lofit.losses import AnswerLogits, answer_cross_entropy, answer_logps, dpo_loss
from lofit.errors import ConfigError
from lofit.training.answers import answer_logits
from lofit.training.config import StepConfig
from lofit.quantized import is_quantized, keep_4bit_differentiable

Batch = dict[str, torch.Tensor]
Logs = dict[str, torch.Tensor]


class InterventionModule(L.LightningModule):
    """Trains `intervention` on `backbone` with the task's loss; subclasses add a penalty and an export.

    Args:
        backbone: the frozen model; never part of the state dict.
        intervention: the trainable vectors (not yet attached; `setup` attaches them).
        loss: `sft` (completion-only cross-entropy) or `dpo` (sigmoid DPO against the base model).
        config: optimiser, DPO and checkpoint-choice settings.
        output_dir: where rank 0 writes the step's product at the end of fit (None: nowhere).
    """

    def __init__(
        self,
        backbone: Backbone,
        intervention: HeadIntervention,
        loss: LossKind,
        config: StepConfig,
        output_dir: str | Path | None = None,
    ) -> None:
        super().__init__()
        if loss not in ("sft", "dpo"):
            raise ConfigError(f"cannot train with loss {loss!r}; the task must use 'sft' or 'dpo'")
        self.backbone = backbone
        self.intervention = intervention
        self.loss_kind: LossKind = loss
        self.config = config
        self.output_dir = Path(output_dir) if output_dir is not None else None
        # split -> example index -> (chosen, rejected) summed log-probs of the frozen base model
        self.reference_logps: dict[str, dict[int, tuple[float, float]]] = {"train": {}, "val": {}}
        self.save_hyperparameters(
            {
                "loss": loss,
                "backbone": backbone.name,
                "trainable_parameters": intervention.num_trainable,
                **asdict(config),
            }
        )

    @property
    def num_trainable(self) -> int:
        """The values training can change (the intervention's; the backbone is frozen)."""
        return self.intervention.num_trainable

    # ------------------------------------------------------------------ placement
    def setup(self, stage: str) -> None:
        """Put the backbone on this process's device and hook the intervention into it."""
        device = self.trainer.strategy.root_device
        current = next(self.backbone.model.parameters()).device
        if current != device:
            if is_quantized(self.backbone.model):
                raise ConfigError(
                    f"the quantized backbone was loaded on {current} but this process trains on {device}; "
                    "load it on the training device (backbone.device)"
                )
            self.backbone.model.to(device)
        if is_quantized(self.backbone.model):
            keep_4bit_differentiable(self.backbone.model)
        if not self.intervention.attached:
            self.intervention.attach(self.backbone.model, self.backbone.family)

    def teardown(self, stage: str) -> None:
        self.intervention.detach()

    # ------------------------------------------------------------------ losses
    def forward(self, batch: Batch) -> AnswerLogits:
        """The logits of the batch's answer positions only (`lofit.training.answers`)."""
        return answer_logits(self.backbone.model, batch)

    def reference(self, batch: Batch, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Base-model log-probs of the batch's chosen and rejected answers, computed once per example.

        The hooks stay in place but are disabled, so the reference costs no second model copy.
        """
        cache = self.reference_logps[split]
        keys = batch["index"].tolist()
        if any(key not in cache for key in keys):
            with torch.no_grad(), self.intervention.disabled():
                logps = answer_logps(self(batch))
            for row, key in enumerate(keys):
                cache[key] = (logps[row].item(), logps[len(keys) + row].item())
        values = torch.tensor([cache[key] for key in keys], dtype=torch.float32, device=batch["input_ids"].device)
        return values[:, 0], values[:, 1]

    def task_loss(self, batch: Batch, split: str) -> tuple[torch.Tensor, Logs]:
        """The task objective of a batch and the extra metrics it yields (DPO rewards)."""
        answers = self(batch)
        if self.loss_kind == "sft":
            return answer_cross_entropy(answers), {}
        pairs = batch["index"].numel()
        logps = answer_logps(answers)
        ref_chosen, ref_rejected = self.reference(batch, split)
        out = dpo_loss(
            logps[:pairs], logps[pairs:], ref_chosen, ref_rejected, self.config.beta, self.config.label_smoothing
        )
        return out.loss, {
            "rewards/chosen": out.chosen_rewards.mean(),
            "rewards/rejected": out.rejected_rewards.mean(),
            "rewards/margin": out.margins.mean(),
            "rewards/accuracy": out.accuracy,
        }

    def penalty(self) -> tuple[torch.Tensor | None, Logs]:
        """A regulariser added to the training loss, and what to log about it (none by default)."""
        return None, {}

    # ------------------------------------------------------------------ loops
    def _log_all(self, prefix: str, values: Logs, size: int, on_step: bool) -> None:
        for name, value in values.items():
            self.log(f"{prefix}/{name}", value, on_step=on_step, on_epoch=True, batch_size=size, sync_dist=True)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        size = batch["index"].numel()
        task_loss, logs = self.task_loss(batch, "train")
        penalty, penalty_logs = self.penalty()
        loss = task_loss if penalty is None else task_loss + penalty
        self.stop_if_not_finite(loss, batch_idx)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=size, sync_dist=True)
        extra = {"task_loss": task_loss, **logs, **penalty_logs}
        if penalty is not None:
            extra["penalty"] = penalty
        self._log_all("train", extra, size, on_step=True)
        return loss

    def stop_if_not_finite(self, loss: torch.Tensor, batch_idx: int) -> None:
        """Stop before a NaN/Inf loss updates anything (all ranks agree, so DDP stops together)."""
        finite = bool(torch.isfinite(loss.detach()).all())
        trainer = self._trainer  # None when a benchmark or a user steps the module by hand
        if (finite if trainer is None else trainer.strategy.reduce_boolean_decision(finite, all=True)):
            return
        raise ConfigError(
            f"the training loss is not finite (local value {loss.item()}) at epoch {self.current_epoch}, "
            f"step {self.global_step} (batch {batch_idx}); nothing was exported: lower the lr or check the data"
        )

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        size = batch["index"].numel()
        loss, logs = self.task_loss(batch, "val")
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, batch_size=size, sync_dist=True)
        self._log_all("val", logs, size, on_step=False)

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW on the intervention only; linear decay to 0 over all optimizer steps, no warmup."""
        optimizer = torch.optim.AdamW(
            self.intervention.parameters(), lr=self.config.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1.0 - step / total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lofit"] = {
            "heads": [list(head) for head in self.intervention.heads],
            "geometry": asdict(self.intervention.geometry),
            "reference_logps": {split: dict(cache) for split, cache in self.reference_logps.items()},
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta = checkpoint.get("lofit")
        if meta is None:
            raise ConfigError("the checkpoint was not written by a lofit training run")
        same_heads = [tuple(head) for head in meta["heads"]] == self.intervention.heads
        if meta["geometry"] != asdict(self.intervention.geometry) or not same_heads:
            raise ConfigError("the checkpoint belongs to another model or head set; resume with the run's own config")
        self.reference_logps = {split: dict(cache) for split, cache in meta["reference_logps"].items()}

    def load_best(self) -> None:
        """Replace the trained vectors by the best epoch's (keep='best').

        They come from the safetensors file that `BestWeightsCheckpoint` writes in this run's own
        folder, never from a path stored in a checkpoint, and safetensors cannot hold code.
        """
        from safetensors.torch import load_file

        from lofit.training.callbacks import BestWeightsCheckpoint

        best = next((c for c in self.trainer.callbacks if isinstance(c, BestWeightsCheckpoint)), None)
        if best is None or not best.weights_path.is_file():
            raise ConfigError(f"keep='best' needs a logged '{self.config.monitor}' and its checkpoint callback")
        self.load_state_dict(load_file(best.weights_path))

    # ------------------------------------------------------------------ product
    def on_fit_end(self) -> None:
        """Rank 0 takes the best epoch's weights (keep='best') and writes the product; other ranks stop."""
        if not self.trainer.is_global_zero:
            return
        if self.config.keep == "best":
            self.load_best()
        if self.output_dir is not None:
            self.export(self.output_dir)

    def export(self, out_dir: Path) -> None:
        """Write the step's product (rank 0 only)."""
        raise NotImplementedError

"""The training objectives: completion-only cross-entropy and the DPO sigmoid loss.

Everything works on causal-LM logits and labels where -100 marks positions that are not part of
an answer; the shift (token t is predicted from position t-1) happens here, in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lofit.data.collate import IGNORE_INDEX


def _shift(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return logits[:, :-1].float(), labels[:, 1:]


def completion_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the answer tokens of the whole batch."""
    logits, labels = _shift(logits, labels)
    if not (labels != IGNORE_INDEX).any():
        raise ValueError("the batch has no answer tokens to train on")
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX)


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed log-probability of each row's answer tokens, shape (N,) (DPO scores sequences by sums)."""
    logits, labels = _shift(logits, labels)
    token_nll = F.cross_entropy(
        logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none"
    )  # (N, T-1), 0 where ignored
    return -token_nll.sum(dim=1)


@dataclass(frozen=True)
class DPOOutput:
    """Mean loss plus the implicit rewards β·(log π − log π_ref) that DPO optimises."""

    loss: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor

    @property
    def margins(self) -> torch.Tensor:
        return self.chosen_rewards - self.rejected_rewards

    @property
    def accuracy(self) -> torch.Tensor:
        """Share of pairs whose chosen answer has the higher reward."""
        return (self.margins > 0).float().mean()


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float = 0.5,
    label_smoothing: float = 0.0,
) -> DPOOutput:
    """Sigmoid DPO loss (Rafailov et al. 2023), conservative variant when label_smoothing > 0.

    z = β·[(π_c − π_r) − (ref_c − ref_r)];
    loss = mean(−(1 − ε)·log σ(z) − ε·log σ(−z)).
    """
    if beta <= 0:
        raise ValueError(f"DPO beta must be positive, got {beta}")
    if not 0 <= label_smoothing < 0.5:
        raise ValueError(f"DPO label_smoothing must be in [0, 0.5), got {label_smoothing}")
    logits = beta * ((policy_chosen - policy_rejected) - (reference_chosen - reference_rejected))
    losses = -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    return DPOOutput(
        loss=losses.mean(),
        chosen_rewards=beta * (policy_chosen - reference_chosen).detach(),
        rejected_rewards=beta * (policy_rejected - reference_rejected).detach(),
    )


def l1_norm(tensor: torch.Tensor) -> torch.Tensor:
    """Σ|x|: the sparsity penalty of head selection."""
    return tensor.abs().sum()

"""The training objectives: completion-only cross-entropy and the DPO sigmoid loss.

Labels mark with -100 the positions that are not part of an answer. The shift (token t is
predicted from position t-1) happens in one place, `answer_positions`; the losses read only the
logits at those positions (`AnswerLogits`), so a caller may compute logits there alone
(`lofit.training.answers`) or gather them from full causal-LM logits (`AnswerLogits.from_full`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lofit.data.collate import IGNORE_INDEX


def answer_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row, position, target) of every answer token in row-major order: position t-1 predicts labels[t]."""
    rows, positions = (labels[:, 1:] != IGNORE_INDEX).nonzero(as_tuple=True)
    return rows, positions, labels[rows, positions + 1]


@dataclass(frozen=True)
class AnswerLogits:
    """The logits that predict each answer token of a batch of `num_rows` rows, with its target and row."""

    logits: torch.Tensor  # (M, vocab), float32
    targets: torch.Tensor  # (M,)
    rows: torch.Tensor  # (M,)
    num_rows: int

    @classmethod
    def from_full(cls, logits: torch.Tensor, labels: torch.Tensor) -> AnswerLogits:
        """Pick the answer positions out of full (N, T, vocab) causal-LM logits."""
        rows, positions, targets = answer_positions(labels)
        return cls(logits[rows, positions].float(), targets, rows, labels.shape[0])


def answer_cross_entropy(answers: AnswerLogits) -> torch.Tensor:
    """Mean next-token cross-entropy over the answer tokens of the whole batch."""
    if answers.targets.numel() == 0:
        raise ValueError("the batch has no answer tokens to train on")
    return F.cross_entropy(answers.logits, answers.targets)


def answer_logps(answers: AnswerLogits) -> torch.Tensor:
    """Summed log-probability of each row's answer tokens, shape (N,) (DPO scores sequences by sums)."""
    token_logps = -F.cross_entropy(answers.logits, answers.targets, reduction="none")
    return token_logps.new_zeros(answers.num_rows).index_add(0, answers.rows, token_logps)


def completion_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """`answer_cross_entropy` of full (N, T, vocab) logits."""
    return answer_cross_entropy(AnswerLogits.from_full(logits, labels))


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """`answer_logps` of full (N, T, vocab) logits."""
    return answer_logps(AnswerLogits.from_full(logits, labels))


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

"""The objectives against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from lofit.data.collate import IGNORE_INDEX
from lofit.losses import completion_cross_entropy, dpo_loss, l1_norm, sequence_logps


def toy_logits_labels() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 3, 1, IGNORE_INDEX], [IGNORE_INDEX, 4, 4, 6, 2]])
    return logits, labels


def manual_token_logps(logits: torch.Tensor, labels: torch.Tensor) -> list[list[float]]:
    """log p(label_t | prefix) read off position t-1, for every answer token of every row."""
    out = []
    for row in range(labels.shape[0]):
        logps = torch.log_softmax(logits[row], dim=-1)
        positions = [t for t in range(1, labels.shape[1]) if labels[row, t] != IGNORE_INDEX]
        out.append([logps[t - 1, labels[row, t]].item() for t in positions])
    return out


def test_completion_cross_entropy_is_mean_over_answer_tokens():
    logits, labels = toy_logits_labels()
    tokens = [lp for row in manual_token_logps(logits, labels) for lp in row]
    assert completion_cross_entropy(logits, labels).item() == pytest.approx(-sum(tokens) / len(tokens), rel=1e-6)


def test_sequence_logps_sum_each_rows_answer_tokens():
    logits, labels = toy_logits_labels()
    expected = [sum(row) for row in manual_token_logps(logits, labels)]
    assert sequence_logps(logits, labels).tolist() == pytest.approx(expected, rel=1e-6)


def test_no_answer_tokens_is_an_error():
    logits, _ = toy_logits_labels()
    with pytest.raises(ValueError, match="no answer tokens"):
        completion_cross_entropy(logits, torch.full((2, 5), IGNORE_INDEX))


@pytest.mark.parametrize("beta,smoothing", [(0.5, 0.0), (0.1, 0.0), (0.5, 0.2)])
def test_dpo_loss_matches_the_formula(beta, smoothing):
    pc, pr = torch.tensor([-5.0, -9.0, -3.0]), torch.tensor([-7.0, -8.0, -3.5])
    rc, rr = torch.tensor([-6.0, -8.5, -3.0]), torch.tensor([-6.5, -8.5, -4.0])
    out = dpo_loss(pc, pr, rc, rr, beta=beta, label_smoothing=smoothing)
    log_sigmoid = lambda x: -math.log1p(math.exp(-x))  # noqa: E731
    losses, margins = [], []
    for i in range(3):
        z = beta * ((pc[i] - pr[i]) - (rc[i] - rr[i])).item()
        losses.append(-(1 - smoothing) * log_sigmoid(z) - smoothing * log_sigmoid(-z))
        margins.append(beta * (pc[i] - rc[i]).item() - beta * (pr[i] - rr[i]).item())
    assert out.loss.item() == pytest.approx(sum(losses) / 3, rel=1e-6)
    assert out.chosen_rewards.tolist() == pytest.approx([beta * 1.0, beta * -0.5, 0.0])
    assert out.margins.tolist() == pytest.approx(margins)
    assert out.accuracy.item() == pytest.approx(sum(m > 0 for m in margins) / 3)


def test_dpo_loss_is_log2_at_the_reference():
    logps = torch.tensor([-4.0, -2.0])
    out = dpo_loss(logps, logps - 1, logps, logps - 1)
    assert out.loss.item() == pytest.approx(math.log(2))
    assert out.accuracy.item() == 0.0  # zero margins are not wins


@pytest.mark.parametrize("beta,smoothing", [(0.0, 0.0), (-1.0, 0.0), (0.5, 0.5)])
def test_dpo_rejects_bad_hyperparameters(beta, smoothing):
    x = torch.zeros(1)
    with pytest.raises(ValueError):
        dpo_loss(x, x, x, x, beta=beta, label_smoothing=smoothing)


def test_l1_norm():
    assert l1_norm(torch.tensor([[1.0, -2.0], [0.5, 0.0]])).item() == 3.5

"""Inference-Time Intervention (Li et al. 2023) as a LoFiT offset-only head intervention.

Training-free:
1. read every head's output (the `o_proj` input, per head) at the last token of each statement
   (the task's prompt + answer, e.g. "Q: {q} A: {answer}") for true and false answers;
2. fit one logistic-regression probe per head on the fit questions and score it by its accuracy
   on held-out validation questions;
3. keep the K heads with the best validation accuracy (ties: (layer, head) order);
4. for each kept head, θ = mean(true) − mean(false) over all statements (mass-mean shift),
   θ̂ = θ/‖θ‖, σ = std of the activations projected on θ̂;
5. add α·σ·θ̂ to that head's output at every position.

Step 5 is exactly a `HeadIntervention` with only an `offset`, so ITI reuses LoFiT's hooks, adapter
format (`lofit.adapter.load_adapter`) and `o_proj`-bias merge unchanged. Edited parameters:
K × head_dim.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F

from lofit.backbone import Backbone
from lofit.families import o_projections
from lofit.intervention import HeadIntervention
from lofit.methods.contrast import (
    ContrastQuestion,
    Statement,
    check_questions,
    in_groups,
    labeled_statements,
    last_token_activations,
    split_questions,
)
from lofit.methods.random_heads import iti_ranking, write_iti_heads
from lofit.methods.registry import METHODS
from lofit.training.heads import resolve_top_k

DEFAULT_TOP_K = 48
DEFAULT_ALPHA = 15.0
ADAPTER_DIR = METHODS["iti"].edit_dir
PROBES_FILE = "probes.json"


class ITIFit(NamedTuple):
    """ITI's product: the offset intervention (not attached) and every head's probe accuracy."""

    intervention: HeadIntervention
    probe_accuracies: torch.Tensor  # (layers, heads), validation accuracy in [0, 1]


def head_activations(backbone: Backbone, statements: Sequence[Statement], batch_size: int = 16) -> torch.Tensor:
    """(N, layers, heads, head_dim) head outputs at the last token of each statement (float32, CPU)."""
    g = backbone.geometry
    acts = last_token_activations(backbone, statements, o_projections(backbone.model, backbone.family), "input", batch_size)
    return acts.reshape(len(statements), g.num_layers, g.num_heads, g.head_dim)


def probe_accuracies(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    steps: int = 300,
    lr: float = 0.05,
    l2: float = 1e-3,
) -> torch.Tensor:
    """Validation accuracy of one L2-regularised logistic-regression probe per feature group.

    `train_x` is (N, P, D): P independent problems (heads) with D features each. Features are
    standardised with the fit part's statistics; each probe minimises mean BCE + l2/2·‖w‖² by
    full-batch Adam from zero weights (deterministic; Adam is per-coordinate, so optimising the
    sum over probes is the same as optimising each alone). Returns (P,) accuracies on `val_x`.
    """
    if train_x.ndim != 3 or val_x.ndim != 3 or train_x.shape[1:] != val_x.shape[1:]:
        raise ValueError(f"probe inputs must be (N, P, D) with equal P, D; got {tuple(train_x.shape)}, {tuple(val_x.shape)}")
    if len(train_y) != len(train_x) or len(val_y) != len(val_x):
        raise ValueError("probe inputs and labels differ in length")
    if set(train_y.tolist()) != {0, 1}:
        raise ValueError("the probes' fit part needs both true and false statements")
    if len(val_y) == 0:
        raise ValueError("the probes' validation part is empty")
    if steps <= 0:
        raise ValueError(f"probe steps must be positive, got {steps}")
    n, p, d = train_x.shape
    chunk = max(1, (1 << 26) // max(1, n * d))  # bound the memory of one chunk of probes
    y = train_y.float()
    accuracies = []
    with torch.enable_grad():
        for start in range(0, p, chunk):
            x = train_x[:, start : start + chunk].float()
            mean, std = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-6)
            x = (x - mean) / std
            weight = torch.zeros(x.shape[1], d, requires_grad=True)
            bias = torch.zeros(x.shape[1], requires_grad=True)
            optimizer = torch.optim.Adam([weight, bias], lr=lr)
            for _ in range(steps):
                optimizer.zero_grad()
                logits = torch.einsum("npd,pd->np", x, weight) + bias
                bce = F.binary_cross_entropy_with_logits(logits, y[:, None].expand_as(logits), reduction="none")
                loss = bce.mean(0).sum() + 0.5 * l2 * weight.pow(2).sum()
                loss.backward()
                optimizer.step()
            with torch.no_grad():
                val = (val_x[:, start : start + chunk].float() - mean) / std
                predicted = (torch.einsum("npd,pd->np", val, weight) + bias) > 0
                accuracies.append((predicted == val_y.bool()[:, None]).float().mean(0))
    return torch.cat(accuracies)


def mass_mean_shift(acts: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Unit direction θ̂ = (mean(true) − mean(false))/‖·‖ of (N, D) activations, and σ = std(acts·θ̂)."""
    labels = labels.bool()
    if labels.all() or not labels.any():
        raise ValueError("the mass-mean shift needs both true and false activations")
    acts = acts.double()
    theta = acts[labels].mean(0) - acts[~labels].mean(0)
    norm = theta.norm()
    if norm == 0:
        raise ValueError("true and false activations have the same mean; the head has no ITI direction")
    unit = theta / norm
    return unit.float(), float((acts @ unit).std(unbiased=False))


class ITIProbes(NamedTuple):
    """Everything ITI reads from the model once; any (K, α) intervention is built from it cheaply."""

    activations: torch.Tensor  # (N, layers, heads, head_dim) at the last token of each statement
    labels: torch.Tensor  # (N,) 1 = true statement
    accuracies: torch.Tensor  # (layers, heads), validation accuracy of each head's probe


def probe_heads(
    backbone: Backbone,
    questions: Sequence[ContrastQuestion],
    seed: int = 42,
    val_fraction: float = 0.2,
    batch_size: int = 16,
    probe_steps: int = 300,
) -> ITIProbes:
    """Steps 1-2 of ITI: head activations of every statement and each head's probe accuracy.

    Questions are split (by question, seeded) into a part that fits the probes and a part that
    scores them, so no statement of a scoring question leaks into a probe.
    """
    check_questions(questions)
    g = backbone.geometry
    statements, labels, groups = labeled_statements(questions)
    fit_questions, _ = split_questions(len(questions), val_fraction, seed)
    fit_rows = in_groups(groups, fit_questions)
    acts = head_activations(backbone, statements, batch_size)
    flat = acts.reshape(len(statements), g.num_total_heads, g.head_dim)
    accuracies = probe_accuracies(
        flat[fit_rows], labels[fit_rows], flat[~fit_rows], labels[~fit_rows], steps=probe_steps
    ).reshape(g.num_layers, g.num_heads)
    return ITIProbes(acts, labels, accuracies)


def iti_intervention(probes: ITIProbes, backbone: Backbone, top_k: int | float, alpha: float) -> HeadIntervention:
    """Steps 3-5 of ITI: offsets α·σ·θ̂ on the K heads whose probes score best (not attached)."""
    if not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"ITI alpha must be a finite number >= 0, got {alpha}")
    g = backbone.geometry
    k = resolve_top_k(top_k, g.num_total_heads)
    chosen = [head for head, _ in iti_ranking(probes.accuracies, backbone.name, g).top(k)]
    rows = []
    for layer, head in chosen:
        unit, sigma = mass_mean_shift(probes.activations[:, layer, head], probes.labels)
        rows.append(alpha * sigma * unit)
    intervention = HeadIntervention(g, components=("offset",), heads=chosen)
    intervention.load_head_rows("offset", torch.stack(rows))
    return intervention.to(next(backbone.model.parameters()).device)


def fit_iti(
    backbone: Backbone,
    questions: Sequence[ContrastQuestion],
    top_k: int | float = DEFAULT_TOP_K,
    alpha: float = DEFAULT_ALPHA,
    seed: int = 42,
    val_fraction: float = 0.2,
    batch_size: int = 16,
    probe_steps: int = 300,
) -> ITIFit:
    """Fit ITI on contrast questions (e.g. `task.contrasts("train")`).

    Args:
        backbone: the frozen model (nothing attached that should not be read).
        questions: questions with true and false answers; split by question into fit/validation.
        top_k: number of heads (int) or fraction of all heads (float in (0, 1]).
        alpha: intervention strength α ≥ 0 (0 leaves the model unchanged).
        seed: seeds the question split.
        val_fraction: share of questions that score the probes.
        batch_size: statements per forward pass.
        probe_steps: Adam steps of each probe.
    Returns:
        `ITIFit(intervention, probe_accuracies)`; the intervention is on the backbone's device,
        not attached; edited parameters = `intervention.num_trainable` = K × head_dim.
    """
    if not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"ITI alpha must be a finite number >= 0, got {alpha}")
    resolve_top_k(top_k, backbone.geometry.num_total_heads)  # fail before reading activations
    probes = probe_heads(backbone, questions, seed, val_fraction, batch_size, probe_steps)
    return ITIFit(iti_intervention(probes, backbone, top_k, alpha), probes.accuracies)


def save_iti(
    out_dir: str | Path, fit: ITIFit, backbone: Backbone, alpha: float, extra: dict | None = None
) -> Path:
    """Write `out_dir/adapter/` (a lofit adapter: load with `lofit.adapter.load_adapter`; it records
    the backbone's prompt format, so `lofit serve` renders prompts as the probes read them) and
    `out_dir/probes.json` (every head's probe accuracy as a heads file, for the step-2 ablation)."""
    from lofit.adapter import save_adapter

    out_dir = Path(out_dir)
    heads = fit.intervention.heads
    scores = [float(fit.probe_accuracies[layer, head]) for layer, head in heads]
    save_adapter(
        fit.intervention,
        out_dir / ADAPTER_DIR,
        base_model=backbone.name,
        head_scores=scores,
        model_type=backbone.model.config.model_type,
        extra={"method": "iti", "alpha": alpha, "top_k": len(heads), **(extra or {})},
        prompt_format=backbone.prompt_format,
    )
    write_iti_heads(out_dir / PROBES_FILE, fit.probe_accuracies, backbone.name, backbone.geometry)
    return out_dir

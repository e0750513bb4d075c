"""RepE reading vectors (Zou et al. 2023): steer the residual stream along a truth direction.

Training-free:
1. contrast pairs (true answer, false answer) of the same question, as statements (the task's
   prompt + answer, e.g. "Q: {q} A: {answer}"); questions are split into a fit part and a
   validation part;
2. for every decoder layer, the residual stream (the layer's output) at the last token;
3. per layer, the first principal component of the paired differences h(true) − h(false) of the
   fit pairs. As in RepE, each difference's sign is flipped for a (seeded, exactly balanced) half
   of the pairs before the mean is removed, so the PCA sees the contrast direction as variance
   instead of subtracting it away. The component is unit-norm, its sign chosen so that true
   statements project higher on average;
4. each layer is scored by its validation separation accuracy: the share of validation pairs
   whose true statement projects higher than its false one; the best `top_layers` layers are kept
   (ties: lower layer first);
5. `α · direction` is added to the output of each kept layer at every position.

Edited parameters: kept layers × hidden size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.hooks import RemovableHandle

from lofit.backbone import Backbone
from lofit.families import FamilySpec, decoder_layers, family_for, text_config
from lofit.hooks import HookedEdit
from lofit.io import atomic_path, read_json, write_json
from lofit.methods.contrast import (
    ContrastQuestion,
    Statement,
    check_questions,
    last_token_activations,
    split_questions,
)
from lofit.methods.registry import METHODS
from lofit.training.heads import resolve_top_k

WEIGHTS_NAME = METHODS["repe"].edit.weights_file
CONFIG_NAME = METHODS["repe"].edit.config_file
STEERING_FORMAT = "lofit-steering"


def contrast_pairs(questions: Sequence[ContrastQuestion]) -> tuple[list[Statement], list[Statement], torch.Tensor]:
    """True and false statements paired within each question, and each pair's question index.

    A question with t true and f false answers gives max(t, f) pairs: true[i mod t] with false[i mod f].
    """
    trues, falses, groups = [], [], []
    for index, item in enumerate(questions):
        for i in range(max(len(item.true), len(item.false))):
            trues.append(item.statement(item.true[i % len(item.true)]))
            falses.append(item.statement(item.false[i % len(item.false)]))
            groups.append(index)
    return trues, falses, torch.tensor(groups, dtype=torch.long)


def layer_states(backbone: Backbone, statements: Sequence[Statement], batch_size: int = 16) -> torch.Tensor:
    """(N, layers, hidden) residual stream after each decoder layer at each statement's last token."""
    layers = decoder_layers(backbone.model, backbone.family)
    return last_token_activations(backbone, statements, layers, "output", batch_size)


def reading_vectors(differences: torch.Tensor, seed: int = 42) -> torch.Tensor:
    """(layers, hidden) unit first principal components of (pairs, layers, hidden) differences.

    Half of the pairs (a seeded choice) have their sign flipped before centring; the result's
    sign makes the mean difference project positively.
    """
    pairs = differences.shape[0]
    if pairs < 2:
        raise ValueError(f"reading vectors need at least 2 contrast pairs in the fit part, got {pairs}")
    signs = torch.ones(pairs, dtype=torch.float64)
    signs[torch.randperm(pairs, generator=torch.Generator().manual_seed(seed))[: pairs // 2]] = -1.0
    diffs = differences.double()
    directions = []
    for layer in range(diffs.shape[1]):
        flipped = diffs[:, layer] * signs[:, None]
        _, _, vh = torch.linalg.svd(flipped - flipped.mean(0), full_matrices=False)
        unit = vh[0]
        if (diffs[:, layer] @ unit).mean() < 0:
            unit = -unit
        directions.append(unit)
    return torch.stack(directions).float()


def separation_accuracy(differences: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """(layers,) share of pairs whose true statement projects higher: mean over pairs of (d·v > 0)."""
    if differences.shape[0] == 0:
        raise ValueError("no validation pairs to score the layers on")
    return (torch.einsum("nlh,lh->nl", differences.double(), directions.double()) > 0).double().mean(0).float()


class ResidualSteering(HookedEdit, nn.Module):
    """Adds a fixed vector to the output of chosen decoder layers at every position.

    Args:
        num_layers: decoder layers of the model it belongs to.
        hidden_size: the model's residual-stream width.
        layers: the steered layers (distinct, in range).
        vectors: (len(layers), hidden_size) vectors added to those layers' outputs.
    """

    def __init__(self, num_layers: int, hidden_size: int, layers: Sequence[int], vectors: torch.Tensor) -> None:
        super().__init__()
        layers = [int(layer) for layer in layers]
        if not layers:
            raise ValueError("steering needs at least one layer")
        if len(set(layers)) != len(layers) or not all(0 <= layer < num_layers for layer in layers):
            raise ValueError(f"steered layers {layers} must be distinct and within the model's {num_layers} layers")
        if tuple(vectors.shape) != (len(layers), hidden_size):
            raise ValueError(f"steering vectors have shape {tuple(vectors.shape)}, expected {(len(layers), hidden_size)}")
        self.num_layers, self.hidden_size, self.layers = num_layers, hidden_size, layers
        self.register_buffer("vectors", vectors.detach().float().clone())
        self._init_hooks()

    @property
    def num_edited(self) -> int:
        """Edited parameters: steered layers × hidden size."""
        return self.vectors.numel()

    @property
    def num_trainable(self) -> int:
        """Same as `num_edited`, under the name every other method reports its size with."""
        return self.num_edited

    def _hook(self, row: int):
        def hook(_module: nn.Module, _args: tuple, output):
            if not self.enabled:
                return None
            hidden = output[0] if isinstance(output, tuple) else output
            hidden = hidden + self.vectors[row].to(device=hidden.device, dtype=hidden.dtype)
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

        return hook

    def _register(self, model: nn.Module, family: FamilySpec | None) -> list[RemovableHandle]:
        blocks = decoder_layers(model, family or family_for(model.config.model_type))
        if len(blocks) != self.num_layers:
            raise ValueError(f"steering has {self.num_layers} layers, the model {len(blocks)}")
        return [blocks[layer].register_forward_hook(self._hook(row)) for row, layer in enumerate(self.layers)]


class RepEFit(NamedTuple):
    """RepE's product: the steering (not attached), every layer's validation accuracy and direction."""

    steering: ResidualSteering
    layer_accuracies: torch.Tensor  # (layers,)
    directions: torch.Tensor  # (layers, hidden), unit norm


def fit_repe(
    backbone: Backbone,
    questions: Sequence[ContrastQuestion],
    top_layers: int | float = 0.25,
    alpha: float = 4.0,
    seed: int = 42,
    val_fraction: float = 0.2,
    batch_size: int = 16,
) -> RepEFit:
    """Fit RepE reading vectors on contrast questions and build the steering.

    Args:
        backbone: the frozen model.
        questions: questions with true and false answers (e.g. `task.contrasts("train")`).
        top_layers: steered layers, as a count or a fraction of all layers.
        alpha: steering strength in residual-stream units (directions are unit-norm); positive
            pushes towards "true", negative towards "false", 0 leaves the model unchanged.
        seed: seeds the question split and the PCA sign flips.
        val_fraction: share of questions whose pairs score the layers.
        batch_size: statements per forward pass.
    """
    if not math.isfinite(alpha):
        raise ValueError(f"RepE alpha must be finite, got {alpha}")
    check_questions(questions)
    num_layers = len(decoder_layers(backbone.model, backbone.family))
    resolve_top_k(top_layers, num_layers, name="top_layers", unit="layers")  # fail before reading states
    trues, falses, groups = contrast_pairs(questions)
    fit_questions, _ = split_questions(len(questions), val_fraction, seed)
    fit_rows = torch.isin(groups, fit_questions)
    differences = layer_states(backbone, trues, batch_size) - layer_states(backbone, falses, batch_size)
    directions = reading_vectors(differences[fit_rows], seed)
    accuracies = separation_accuracy(differences[~fit_rows], directions)
    steering = steering_for(backbone, accuracies, directions, top_layers, alpha)
    return RepEFit(steering, accuracies, directions)


def steering_for(
    backbone: Backbone, accuracies: torch.Tensor, directions: torch.Tensor, top_layers: int | float, alpha: float
) -> ResidualSteering:
    """α · direction on the `top_layers` layers of best validation accuracy (ties: lower layer first).

    Building a steering from a fit's accuracies and directions needs no forward pass, so a
    validation search over α and the layer count reads the model once.
    """
    if not math.isfinite(alpha):
        raise ValueError(f"RepE alpha must be finite, got {alpha}")
    num_layers = len(accuracies)
    count = resolve_top_k(top_layers, num_layers, name="top_layers", unit="layers")
    order = sorted(range(num_layers), key=lambda layer: -accuracies[layer].item())[:count]
    hidden = text_config(backbone.model.config).hidden_size
    steering = ResidualSteering(num_layers, hidden, order, alpha * directions[order])
    return steering.to(next(backbone.model.parameters()).device)


@dataclass
class SteeringConfig:
    """What a saved steering is and which model it belongs to."""

    base_model: str
    model_type: str
    num_layers: int
    hidden_size: int
    layers: list[int]
    method: str = "repe"
    format: str = STEERING_FORMAT
    extra: dict | None = None


def save_steering(steering: ResidualSteering, path: str | Path, backbone: Backbone, extra: dict | None = None) -> Path:
    """Write `steering.safetensors` (the added vectors) and `steering_config.json` into folder `path`."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = SteeringConfig(
        base_model=backbone.name,
        model_type=backbone.model.config.model_type,
        num_layers=steering.num_layers,
        hidden_size=steering.hidden_size,
        layers=list(steering.layers),
        extra=extra or {},
    )
    with atomic_path(path / WEIGHTS_NAME) as tmp:
        save_file({"vectors": steering.vectors.cpu().contiguous()}, str(tmp), metadata={"format": STEERING_FORMAT})
    write_json(path / CONFIG_NAME, asdict(config))
    return path


def load_steering(path: str | Path, backbone: Backbone) -> ResidualSteering:
    """Rebuild a saved steering for `backbone` (not attached); a clear error for another model's steering."""
    path = Path(path)
    raw = read_json(path / CONFIG_NAME)
    if raw.get("format") != STEERING_FORMAT:
        raise ValueError(f"{path / CONFIG_NAME}: not a {STEERING_FORMAT} config")
    config = SteeringConfig(**raw)
    num_layers = len(decoder_layers(backbone.model, backbone.family))
    hidden = text_config(backbone.model.config).hidden_size
    if (config.num_layers, config.hidden_size) != (num_layers, hidden):
        raise ValueError(
            f"{path}: steering is for {config.num_layers} layers × {config.hidden_size} ({config.base_model}), "
            f"the model has {num_layers} × {hidden}"
        )
    vectors = load_file(str(path / WEIGHTS_NAME))["vectors"]
    steering = ResidualSteering(num_layers, hidden, config.layers, vectors)
    return steering.to(next(backbone.model.parameters()).device)

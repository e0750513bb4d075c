"""RepE on tiny models: a planted residual direction is recovered, layers are chosen by separation, α = 0 is identity."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_FAMILIES
from planted import planted, random_questions, unit_vector

from lofit.families import decoder_layers
from lofit.methods.contrast import ContrastQuestion
from lofit.methods.repe import (
    contrast_pairs,
    fit_repe,
    load_steering,
    reading_vectors,
    save_steering,
    separation_accuracy,
)

IDS = torch.tensor([[5, 17, 300, 42, 9, 1200, 77, 3]])


def logits(backbone):
    with torch.no_grad():
        return backbone.model(input_ids=IDS).logits


@pytest.fixture
def questions():
    return random_questions(24)


def test_recovers_a_planted_direction_and_picks_its_layer(tiny_backbone, questions):
    hidden = tiny_backbone.model.config.hidden_size
    direction = unit_vector(hidden, seed=5)
    with planted(tiny_backbone, questions, direction, strength=3.0, layer=1):
        fit = fit_repe(tiny_backbone, questions, top_layers=1, alpha=1.0, seed=0, val_fraction=0.25)
    assert fit.steering.layers == [1]
    assert fit.layer_accuracies[1] == 1.0
    assert fit.layer_accuracies[0] < 0.9  # layer 0 knows nothing about the label
    cosine = torch.nn.functional.cosine_similarity(fit.directions[1], direction, dim=0)
    assert cosine > 0.99  # and the sign is aligned: true projects higher
    torch.testing.assert_close(fit.directions.norm(dim=-1), torch.ones(2))
    assert fit.steering.num_edited == hidden


def test_steering_adds_alpha_direction_to_the_layer_output_everywhere(tiny_backbone, questions):
    fit = fit_repe(tiny_backbone, questions, top_layers=1, alpha=2.0, seed=0)
    (layer,) = fit.steering.layers
    block = decoder_layers(tiny_backbone.model, tiny_backbone.family)[layer]
    seen = []

    def capture(_module, _args, out):
        seen.append(out[0] if isinstance(out, tuple) else out)

    handle = block.register_forward_hook(capture)
    logits(tiny_backbone)
    handle.remove()
    with fit.steering.applied(tiny_backbone.model):
        handle = block.register_forward_hook(capture)  # runs after the steering hook: sees its result
        logits(tiny_backbone)
        handle.remove()
    base, steered = seen
    shift = steered - base
    torch.testing.assert_close(shift, (2.0 * fit.directions[layer]).expand_as(shift), rtol=0, atol=1e-6)


@pytest.mark.parametrize("model_type", TINY_FAMILIES)
def test_zero_alpha_is_bitwise_identity(tiny_backbone_factory, model_type, questions):
    backbone = tiny_backbone_factory(model_type)
    base = logits(backbone)
    fit = fit_repe(backbone, questions[:6], top_layers=1.0, alpha=0.0, seed=0)
    with fit.steering.applied(backbone.model):
        assert torch.equal(logits(backbone), base)
    steered = fit_repe(backbone, questions[:6], top_layers=1.0, alpha=3.0, seed=0).steering
    with steered.applied(backbone.model):
        assert not torch.allclose(logits(backbone), base)
        with steered.disabled():
            assert torch.equal(logits(backbone), base)


def test_reading_vector_math():
    u = torch.tensor([0.6, 0.8, 0.0])
    noise = 0.01 * torch.randn(40, 1, 3, generator=torch.Generator().manual_seed(0))
    diffs = 2.0 * u.expand(40, 1, 3) + noise
    (direction,) = reading_vectors(diffs, seed=0)
    assert torch.dot(direction, u) > 0.999
    acc = separation_accuracy(torch.cat([diffs, -diffs[:10]]), direction[None])
    assert acc.item() == pytest.approx(40 / 50)
    trues, falses, groups = contrast_pairs([ContrastQuestion("q", ("a", "b", "c"), ("x",))])
    assert falses == [("q", " x")] * 3 and trues[2] == ("q", " c") and groups.tolist() == [0, 0, 0]


def test_save_load_roundtrip(tiny_backbone, questions, tmp_path):
    fit = fit_repe(tiny_backbone, questions, top_layers=2, alpha=1.5, seed=0)
    save_steering(fit.steering, tmp_path, tiny_backbone, extra={"alpha": 1.5})
    loaded = load_steering(tmp_path, tiny_backbone)
    assert loaded.layers == fit.steering.layers
    torch.testing.assert_close(loaded.vectors, fit.steering.vectors)


def test_bad_inputs_fail_with_one_line_errors(tiny_backbone, questions):
    with pytest.raises(ValueError, match="top_layers"):
        fit_repe(tiny_backbone, questions, top_layers=3, alpha=1.0)
    with pytest.raises(ValueError, match="alpha"):
        fit_repe(tiny_backbone, questions, top_layers=1, alpha=float("inf"))
    with pytest.raises(ValueError, match="at least 2 contrast questions"):
        fit_repe(tiny_backbone, questions[:1], top_layers=1, alpha=1.0)

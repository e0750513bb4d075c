"""The head intervention on tiny random models of every supported family."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import TINY_FAMILIES
from lofit.families import UnsupportedArchitectureError, family_for, o_projections
from lofit.intervention import HeadIntervention

IDS = torch.tensor([[5, 17, 300, 42, 9, 1200, 77, 3], [8, 8, 1000, 2, 64, 19, 4, 500]])


def logits(backbone, ids=IDS):
    with torch.no_grad():
        return backbone.model(input_ids=ids).logits


def random_intervention(geometry, components, heads=None, seed=0, std=0.5):
    return HeadIntervention(geometry, components, heads=heads, init_std=std, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("model_type", TINY_FAMILIES)
def test_zero_intervention_is_bitwise_identity(tiny_backbone_factory, model_type):
    backbone = tiny_backbone_factory(model_type)
    base = logits(backbone)
    with HeadIntervention(backbone.geometry, ("scale", "offset")).applied(backbone.model):
        hooked = logits(backbone)
    assert torch.equal(base, hooked)


@pytest.mark.parametrize("model_type", TINY_FAMILIES)
def test_hook_equals_manual_o_proj_edit(tiny_backbone_factory, model_type):
    """Hooked output equals a model whose o_proj explicitly computes W((1+A)z + v)."""
    backbone = tiny_backbone_factory(model_type)
    g = backbone.geometry
    intervention = random_intervention(g, ("scale", "offset"))
    with intervention.applied(backbone.model):
        hooked = logits(backbone)
    handles = []
    for layer, proj in enumerate(o_projections(backbone.model)):
        scale = 1 + intervention.scale[layer].detach()
        offset = intervention.offset[layer].detach()

        def manual(_m, args, scale=scale, offset=offset):
            z = args[0].reshape(*args[0].shape[:-1], g.num_heads, g.head_dim)
            return ((z * scale + offset).reshape(args[0].shape),)

        handles.append(proj.register_forward_pre_hook(manual))
    manual_logits = logits(backbone)
    for h in handles:
        h.remove()
    torch.testing.assert_close(hooked, manual_logits)
    assert not torch.allclose(hooked, logits(backbone))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_chosen_heads_only_change_and_get_gradients(tiny_backbone, data):
    # the frozen fixture model is never modified, so sharing it across examples is safe
    g = tiny_backbone.geometry
    every = [(l, h) for l in range(g.num_layers) for h in range(g.num_heads)]
    heads = data.draw(st.lists(st.sampled_from(every), min_size=1, max_size=len(every), unique=True))
    intervention = random_intervention(g, ("offset",), heads=heads, std=0.1)
    chosen = torch.zeros(g.num_layers, g.num_heads, dtype=torch.bool)
    for l, h in heads:
        chosen[l, h] = True
    assert torch.all(intervention.offset[~chosen] == 0)
    with intervention.applied(tiny_backbone.model):
        tiny_backbone.model(input_ids=IDS).logits.pow(2).mean().backward()
    grad = intervention.offset.grad
    assert torch.all(grad[~chosen] == 0)
    assert torch.all(grad[chosen].abs().sum(-1) > 0)
    assert intervention.num_trainable == len(heads) * g.head_dim


def test_backbone_weights_stay_frozen(tiny_backbone):
    intervention = random_intervention(tiny_backbone.geometry, ("scale",))
    with intervention.applied(tiny_backbone.model):
        tiny_backbone.model(input_ids=IDS).logits.sum().backward()
    assert all(p.grad is None for p in tiny_backbone.model.parameters())
    assert intervention.scale.grad is not None


def test_hooks_only_on_layers_with_chosen_heads(tiny_backbone):
    intervention = random_intervention(tiny_backbone.geometry, ("offset",), heads=[(1, 2)])
    projections = o_projections(tiny_backbone.model)
    with intervention.applied(tiny_backbone.model):
        assert len(projections[0]._forward_pre_hooks) == 0
        assert len(projections[1]._forward_pre_hooks) == 1
    assert all(len(p._forward_pre_hooks) == 0 for p in projections)


def test_enable_disable_and_detach(tiny_backbone):
    base = logits(tiny_backbone)
    intervention = random_intervention(tiny_backbone.geometry, ("offset",))
    intervention.attach(tiny_backbone.model)
    changed = logits(tiny_backbone)
    with intervention.disabled():
        assert torch.equal(logits(tiny_backbone), base)
    assert torch.equal(logits(tiny_backbone), changed)
    with pytest.raises(RuntimeError, match="already attached"):
        intervention.attach(tiny_backbone.model)
    intervention.detach()
    assert torch.equal(logits(tiny_backbone), base)


def test_applies_during_cached_generation(tiny_backbone):
    """Generated tokens see the intervention too: cached decoding equals a full re-forward."""
    intervention = random_intervention(tiny_backbone.geometry, ("scale", "offset"), std=1.0)
    prompt = IDS[:1]
    with intervention.applied(tiny_backbone.model):
        out = tiny_backbone.model.generate(prompt, max_new_tokens=6, do_sample=False, pad_token_id=0)
        full = tiny_backbone.model(input_ids=out[:, :-1]).logits
    assert torch.equal(full[0, prompt.shape[1] - 1 :].argmax(-1), out[0, prompt.shape[1] :])


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_same_effect_for_every_attention_implementation(tiny_backbone_factory, impl):
    backbone = tiny_backbone_factory("llama")
    reference = tiny_backbone_factory("llama")
    backbone.model.set_attn_implementation(impl)
    reference.model.set_attn_implementation("eager")
    intervention = random_intervention(backbone.geometry, ("scale", "offset"))
    with intervention.applied(backbone.model):
        a = logits(backbone)
    with intervention.applied(reference.model):
        b = logits(reference)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_bad_heads_and_components_rejected(tiny_backbone):
    g = tiny_backbone.geometry
    with pytest.raises(ValueError, match="outside"):
        HeadIntervention(g, ("offset",), heads=[(2, 0)])
    with pytest.raises(ValueError, match="more than once"):
        HeadIntervention(g, ("offset",), heads=[(0, 1), (0, 1)])
    with pytest.raises(ValueError, match="components"):
        HeadIntervention(g, ("bias",))


def test_unknown_architecture_error_says_how_to_add_one():
    with pytest.raises(UnsupportedArchitectureError, match="lofit/families.py"):
        family_for("gpt2")

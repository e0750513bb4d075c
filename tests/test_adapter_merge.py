"""Adapter save/load round trips, shape checks, merging and export to a plain HF folder."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

from conftest import TINY_FAMILIES
from lofit.adapter import CONFIG_NAME, WEIGHTS_NAME, load_adapter, save_adapter
from lofit.backbone import BackboneConfig, load_backbone
from lofit.families import o_projections
from lofit.intervention import HeadIntervention
from lofit.merge import export_merged, merge_into

IDS = torch.tensor([[5, 17, 300, 42, 9, 1200, 77, 3]])
HEADS = [(1, 2), (0, 3), (1, 0)]


def trained(geometry, components=("offset",), heads=HEADS, seed=1):
    return HeadIntervention(geometry, components, heads=heads, init_std=0.5, generator=torch.Generator().manual_seed(seed))


def logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


def save(backbone, intervention, path, **kw):
    return save_adapter(intervention, path, backbone.name, model_type=backbone.model.config.model_type, **kw)


def test_round_trip_keeps_heads_order_and_values(tiny_backbone, tmp_path):
    original = trained(tiny_backbone.geometry, ("scale", "offset"))
    save(tiny_backbone, original, tmp_path, head_scores=[3.0, 2.0, 1.0])
    config = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert config["heads"] == [list(h) for h in HEADS]
    assert config["head_scores"] == [3.0, 2.0, 1.0]
    assert config["num_layers"] == 2 and config["head_dim"] == 8 and config["model_type"] == "llama"
    loaded = load_adapter(tmp_path, tiny_backbone)
    assert loaded.heads == HEADS
    assert torch.equal(loaded.offset, original.offset.detach())
    assert torch.equal(loaded.scale, original.scale.detach())
    with original.applied(tiny_backbone.model):
        a = logits(tiny_backbone.model)
    with loaded.applied(tiny_backbone.model):
        b = logits(tiny_backbone.model)
    assert torch.equal(a, b)


def test_no_pickle_in_adapter(tiny_backbone, tmp_path):
    save(tiny_backbone, trained(tiny_backbone.geometry), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CONFIG_NAME, WEIGHTS_NAME])


def test_shape_mismatch_is_a_clear_error(tiny_backbone_factory, tmp_path):
    small = tiny_backbone_factory("llama")
    save(small, trained(small.geometry), tmp_path)
    other = tiny_backbone_factory("llama", num_attention_heads=8, num_key_value_heads=4, hidden_size=64)
    with pytest.raises(ValueError, match=r"adapter is for 2 layers × 4 heads × 8 dims"):
        load_adapter(tmp_path, other)


def test_corrupt_adapter_files_are_clear_errors(tiny_backbone, tmp_path):
    save(tiny_backbone, trained(tiny_backbone.geometry), tmp_path)
    save_file({"offset": torch.zeros(2, 8)}, str(tmp_path / WEIGHTS_NAME))
    with pytest.raises(ValueError, match=r"adapter.safetensors: 'offset' has shape \(2, 8\), expected \(3, 8\)"):
        load_adapter(tmp_path, tiny_backbone)
    (tmp_path / CONFIG_NAME).write_text("{not json")
    with pytest.raises(ValueError, match="adapter_config.json: invalid JSON"):
        load_adapter(tmp_path, tiny_backbone)


@pytest.mark.parametrize("model_type", TINY_FAMILIES)
def test_merge_equals_hooked_model(tiny_backbone_factory, model_type):
    backbone = tiny_backbone_factory(model_type)
    intervention = trained(backbone.geometry, ("scale", "offset"))
    with intervention.applied(backbone.model):
        hooked = logits(backbone.model)
    merge_into(backbone.model, intervention)
    torch.testing.assert_close(logits(backbone.model), hooked, atol=1e-5, rtol=1e-5)


def test_merge_refuses_an_attached_intervention(tiny_backbone):
    intervention = trained(tiny_backbone.geometry).attach(tiny_backbone.model)
    with pytest.raises(RuntimeError, match="detach"):
        merge_into(tiny_backbone.model, intervention)


@pytest.mark.parametrize("model_type", TINY_FAMILIES)
def test_export_loads_in_plain_transformers_with_same_logits(tiny_backbone_factory, tmp_path, model_type):
    backbone = tiny_backbone_factory(model_type)
    intervention = trained(backbone.geometry, ("scale", "offset"))
    with intervention.applied(backbone.model):
        hooked = logits(backbone.model)
    before = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    export_merged(backbone.model, backbone.tokenizer, intervention, tmp_path / "merged")
    assert all(torch.equal(before[k], v) for k, v in backbone.model.state_dict().items())
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32)
    assert plain.config.attention_bias is True
    torch.testing.assert_close(logits(plain), hooked, atol=1e-5, rtol=1e-5)


def test_nf4_backbone_merges_offsets_into_unquantized_bias(tiny_backbone_factory, tmp_path):
    # bitsandbytes' CPU 4-bit kernels need input widths of at least one 64-value block
    tiny = tiny_backbone_factory("llama", hidden_size=128, intermediate_size=256)
    folder = tmp_path / "tiny"
    tiny.model.save_pretrained(folder)
    tiny.tokenizer.save_pretrained(folder)
    quantized = load_backbone(BackboneConfig(model=str(folder), quantization="nf4"))
    proj = o_projections(quantized.model)[1]
    assert type(proj).__name__ == "Linear4bit"
    intervention = trained(quantized.geometry)
    base = logits(quantized.model)
    with intervention.applied(quantized.model):
        hooked = logits(quantized.model)
    merge_into(quantized.model, intervention)
    assert proj.bias is not None and proj.bias.dtype == torch.float32
    # bnb's CPU 4-bit kernel rounds through bf16, so W(z+v) and Wz+Wv agree to ~1e-3, not bitwise
    effect = (hooked - base).abs().max()
    assert effect > 0.5
    assert (logits(quantized.model) - hooked).abs().max() < 1e-2 * effect
    with pytest.raises(ValueError, match="quantized o_proj"):
        merge_into(quantized.model, trained(quantized.geometry, ("scale",)))


@pytest.mark.parametrize("quantization", ["nf4", "int8"])
def test_quantized_backbone_passes_gradients_and_merges_offsets(tiny_backbone_factory, tmp_path, quantization):
    """A frozen 4-/8-bit backbone: A and v get gradients through quantized o_proj; merging the
    offsets into the (unquantized) bias reproduces the hooked output."""
    tiny = tiny_backbone_factory("llama", hidden_size=128, intermediate_size=256)
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    quantized = load_backbone(BackboneConfig(model=str(tmp_path), quantization=quantization))
    logits(quantized.model)  # a no-grad pass first: bnb's CPU repacking would then drop 4-bit gradients
    both = trained(quantized.geometry, ("scale", "offset"))
    with both.applied(quantized.model):
        quantized.model(input_ids=IDS).logits.pow(2).mean().backward()
    for name in ("scale", "offset"):
        grad = getattr(both, name).grad
        assert grad is not None and grad[1, 2].abs().sum() > 0 and grad[0, 0].abs().sum() == 0
    assert all(p.grad is None for p in quantized.model.parameters() if p.is_floating_point())
    offsets = trained(quantized.geometry)
    base = logits(quantized.model)
    with offsets.applied(quantized.model):
        hooked = logits(quantized.model)
    merge_into(quantized.model, offsets)
    effect = (hooked - base).abs().max()
    assert effect > 0.5
    assert (logits(quantized.model) - hooked).abs().max() < 1e-2 * effect


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_adapters_are_refused_at_save_and_at_load(tiny_backbone, tmp_path, bad):
    intervention = trained(tiny_backbone.geometry, ("scale", "offset"))
    with torch.no_grad():
        intervention.offset[1, 2, 3] = bad
    with pytest.raises(ValueError, match=r"adapter.safetensors: tensor 'offset' holds NaN or Inf"):
        save(tiny_backbone, intervention, tmp_path / "refused")
    assert not (tmp_path / "refused").exists(), "nothing is written for a refused adapter"
    with pytest.raises(ValueError, match="head_scores hold NaN or Inf"):
        save(tiny_backbone, trained(tiny_backbone.geometry), tmp_path / "scores", head_scores=[1.0, bad, 0.5])
    save(tiny_backbone, trained(tiny_backbone.geometry), tmp_path / "ok")
    rows = torch.zeros(3, 8)
    rows[0, 0] = bad
    save_file({"offset": rows}, str(tmp_path / "ok" / WEIGHTS_NAME))  # e.g. written by another tool
    with pytest.raises(ValueError, match=rf"{tmp_path / 'ok' / WEIGHTS_NAME}: tensor 'offset' holds NaN or Inf"):
        load_adapter(tmp_path / "ok", tiny_backbone)


@pytest.mark.parametrize("keep", [0, 5, 40, -4], ids=["empty", "header-cut", "header-only", "data-cut"])
def test_truncated_weights_file_is_a_clear_error_naming_it(tiny_backbone, tmp_path, keep):
    save(tiny_backbone, trained(tiny_backbone.geometry), tmp_path)
    weights = tmp_path / WEIGHTS_NAME
    data = weights.read_bytes()
    weights.write_bytes(data[:keep])
    with pytest.raises(ValueError, match=rf"{weights}: not a readable safetensors file"):
        load_adapter(tmp_path, tiny_backbone)

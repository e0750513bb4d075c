"""Backbone loading: the embedded GGUF conversion, BOS rules, freezing, quantized loading."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lofit.backbone import BackboneConfig, load_backbone
from lofit.convert import embedded_gguf_path
from lofit.families import o_projections

ROOT = Path(__file__).resolve().parents[1]


def digest(folder: Path) -> str:
    sha = hashlib.sha256()
    for file in sorted(folder.rglob("*")):
        if file.is_file():
            sha.update(file.name.encode() + file.read_bytes())
    return sha.hexdigest()


@pytest.mark.real_model
def test_embedded_conversion_is_deterministic_and_reloads(embedded_model_dir, tmp_path):
    """Converting twice gives identical bytes (a stable DVC output) and the folder loads fast."""
    out = tmp_path / "again"
    result = subprocess.run(
        [sys.executable, str(ROOT / "pipelines" / "prepare_model.py"), "--model", "embedded:smollm2-135m-instruct", "--out", str(out)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert digest(out) == digest(embedded_model_dir)
    backbone = load_backbone(BackboneConfig(model=str(out)))
    g = backbone.geometry
    assert (g.num_layers, g.num_heads, g.head_dim) == (30, 9, 64)
    assert backbone.bos_ids == []  # SmolLM2 adds no BOS
    assert all(not p.requires_grad for p in backbone.model.parameters())
    ids = torch.tensor([backbone.encode("The capital of France is")])
    generated = backbone.model.generate(ids, max_new_tokens=4, do_sample=False)[0, ids.shape[1] :]
    assert backbone.tokenizer.decode(generated).strip().startswith("Paris")


def test_prepare_model_copies_a_local_folder(tiny_backbone, tmp_path):
    tiny_backbone.model.save_pretrained(tmp_path / "src")
    tiny_backbone.tokenizer.save_pretrained(tmp_path / "src")
    result = subprocess.run(
        [sys.executable, str(ROOT / "pipelines" / "prepare_model.py"), "--model", str(tmp_path / "src"), "--out", str(tmp_path / "out")],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    copy = load_backbone(BackboneConfig(model=str(tmp_path / "out")))
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.equal(copy.model(input_ids=ids).logits, tiny_backbone.model(input_ids=ids).logits)


def test_prepare_model_missing_model_is_one_line_error(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "pipelines" / "prepare_model.py"), "--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")],
        capture_output=True, text=True, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 2 and result.stderr == f"prepare_model: model {tmp_path / 'nowhere'}: folder not found\n"
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_unknown_embedded_model_is_clear():
    with pytest.raises(ValueError, match="unknown embedded model 'nope'"):
        embedded_gguf_path("nope")


def test_gemma_family_gets_bos(tiny_backbone_factory):
    gemma = tiny_backbone_factory("gemma")
    assert gemma.bos_ids == [gemma.tokenizer.bos_token_id]
    assert gemma.encode("hi")[0] == gemma.tokenizer.bos_token_id
    assert gemma.encode("hi", add_bos=False)[0] != gemma.tokenizer.bos_token_id
    assert tiny_backbone_factory("qwen2").bos_ids == []


def test_pad_token_is_set(tiny_backbone):
    assert tiny_backbone.tokenizer.pad_token_id is not None


@pytest.mark.parametrize("quantization,layer_type", [("nf4", "Linear4bit"), ("int8", "Linear8bitLt")])
def test_quantized_folder_loads_frozen(tiny_backbone_factory, tmp_path, quantization, layer_type):
    tiny = tiny_backbone_factory("llama", hidden_size=128, intermediate_size=256)
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    backbone = load_backbone(BackboneConfig(model=str(tmp_path), quantization=quantization))
    assert type(o_projections(backbone.model)[0]).__name__ == layer_type
    assert all(not p.requires_grad for p in backbone.model.parameters())
    with torch.no_grad():
        out = backbone.model(input_ids=torch.tensor([[1, 2, 3, 4]])).logits
    assert torch.isfinite(out).all()


def test_unknown_architecture_fails_before_loading_weights(tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_head=2, n_embd=8).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="model_type 'gpt2' has no LoFiT family entry"):
        load_backbone(BackboneConfig(model=str(tmp_path)))

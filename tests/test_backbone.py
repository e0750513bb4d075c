"""Backbone loading: the embedded GGUF conversion, BOS rules, freezing, quantized loading."""

from __future__ import annotations

import hashlib
import json
import os
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
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
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


# ---------- the config checks itself; a bad model source fails in one line before weights load ----------


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("quantization", "nf8", r"backbone.quantization must be one of \['none', 'nf4', 'int8'\], got 'nf8'"),
        ("quantization", "None", r"backbone.quantization must be one of"),
        ("dtype", "fp16", r"backbone.dtype must be one of \['auto', 'float32', 'bfloat16', 'float16'\], got 'fp16'"),
        ("device", "gpu 0", r"backbone.device must be a torch device"),
        ("model", " ", r"backbone.model must name a model"),
        ("attn_implementation", "", r"backbone.attn_implementation must be a name or null"),
    ],
)
def test_backbone_config_refuses_values_that_bypass_the_cli(field, value, message):
    """The pipeline builds BackboneConfig from params.yaml directly; a typo once loaded int8 silently."""
    from lofit.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        BackboneConfig(**{field: value})


def test_quantization_config_is_exhaustive():
    from lofit.backbone import _quantization_config
    from lofit.errors import ConfigError

    cfg = BackboneConfig()
    cfg.quantization = "int4"  # assigned after the checks, as a mutated config would be
    with pytest.raises(ConfigError, match="'int4' has no bitsandbytes storage"):
        _quantization_config(cfg)


@pytest.fixture
def saved_tiny(tiny_backbone, tmp_path) -> Path:
    folder = tmp_path / "tiny"
    tiny_backbone.model.save_pretrained(folder)
    tiny_backbone.tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("model", ["data/models/nope", "./my-model", "../models/x", "/no/such/folder", "org/name/extra"])
def test_a_missing_folder_is_named_not_taken_for_a_hub_id(model, tmp_path, monkeypatch):
    from lofit.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=rf"^backbone.model {model}: folder not found$"):
        load_backbone(BackboneConfig(model=model))


def test_a_folder_without_config_is_named(tmp_path):
    from lofit.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"^backbone.model {tmp_path}: no config.json in the folder"):
        load_backbone(BackboneConfig(model=str(tmp_path)))


def test_an_unreachable_hub_id_is_one_line():
    """`org/name` may be a Hub id; offline, the line says so instead of a retry log and a traceback."""
    code = (
        "from lofit.backbone import BackboneConfig, load_backbone\n"
        "try:\n    load_backbone(BackboneConfig(model='lofit-test-org/no-such-model'))\n"
        "except ValueError as err:\n    print(type(err).__name__, err)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.stdout == (
        "ConfigError backbone.model lofit-test-org/no-such-model: not a local folder, and the Hugging Face Hub "
        "cannot provide it: no Hub access is possible offline (HF_HUB_OFFLINE=1)\n"
    ), result.stderr


@pytest.mark.parametrize("keep", [0, 7, 100, -1])
def test_a_truncated_weights_file_is_named_before_loading(saved_tiny, keep):
    from lofit.errors import ConfigError

    weights = saved_tiny / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:keep] if keep >= 0 else data[:-1])
    with pytest.raises(ConfigError, match=rf"^backbone.model {saved_tiny}: weights file {weights} is truncated or corrupt"):
        load_backbone(BackboneConfig(model=str(saved_tiny)))


def test_a_missing_shard_is_named(saved_tiny):
    from lofit.errors import ConfigError

    (saved_tiny / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"lm_head.weight": "model-00002.safetensors"}}))
    with pytest.raises(ConfigError, match=r"model-00002.safetensors \(listed in model.safetensors.index.json\) not found"):
        load_backbone(BackboneConfig(model=str(saved_tiny)))


def test_a_whole_folder_still_loads(saved_tiny, tiny_backbone):
    loaded = load_backbone(BackboneConfig(model=str(saved_tiny)))
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.equal(loaded.model(input_ids=ids).logits, tiny_backbone.model(input_ids=ids).logits)

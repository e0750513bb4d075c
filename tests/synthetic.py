"""Tiny synthetic tasks and a tiny model in which only one attention head can matter.

Importable by name (`synthetic:ToySFTTask`) so CLI subprocesses can train on them too
(run with `tests/` on PYTHONPATH).
"""

from __future__ import annotations

from pathlib import Path

import torch

from lofit.backbone import Backbone, wrap_model
from lofit.data.collate import PadCollator, tokenize_examples
from lofit.data.examples import PreferenceExample, SFTExample, Split
from lofit.losses import sequence_logps
from lofit.tasks.base import Task

LIVE_HEAD = (1, 2)


def isolate_head(model: torch.nn.Module, live: tuple[int, int] = LIVE_HEAD, gain: float = 10.0) -> torch.nn.Module:
    """Zero the o_proj columns of every head but `live` (no other head can change the output) and
    amplify the live head's columns so its effect on the loss is clearly measurable."""
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    with torch.no_grad():
        for layer_index, layer in enumerate(model.model.layers):
            weight = layer.self_attn.o_proj.weight
            for head in range(config.num_attention_heads):
                columns = weight[:, head * head_dim : (head + 1) * head_dim]
                columns.mul_(gain if (layer_index, head) == live else 0.0)
    return model


def one_head_backbone(model: torch.nn.Module, tokenizer) -> Backbone:
    return wrap_model(isolate_head(model), tokenizer, name="tiny-one-head")


class _ToyTask(Task):
    """Shared evaluation: mean summed log-prob of the reference answers (higher is better)."""

    primary_metric = "answer_logprob"

    def __init__(self, n_train: int = 16, n_val: int = 8) -> None:
        self.sizes = {"train": n_train, "val": n_val, "test": n_val}

    def evaluate(self, backbone, split="test", out_dir=None, limit=None, batch_size=16) -> dict[str, float]:
        examples = self.examples(split)[:limit]
        as_sft = [SFTExample(e.prompt, e.chosen) if isinstance(e, PreferenceExample) else e for e in examples]
        features = tokenize_examples(backbone, as_sft)
        collate = PadCollator(backbone.tokenizer.pad_token_id)
        device = next(backbone.model.parameters()).device
        total = 0.0
        for start in range(0, len(features), batch_size):
            batch = collate(features[start : start + batch_size])
            with torch.no_grad():
                logits = backbone.model(
                    input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
                ).logits
            total += sequence_logps(logits, batch["labels"].to(device)).sum().item()
        return {"answer_logprob": total / len(features), "n": float(len(features))}


class ToySFTTask(_ToyTask):
    name = "toy-sft"
    loss = "sft"

    def examples(self, split: Split) -> list[SFTExample]:
        offset = {"train": 0, "val": 1000, "test": 2000}[split]
        return [SFTExample(f"Q: what colour is item {offset + i}? A:", " blue") for i in range(self.sizes[split])]


class ToyDPOTask(_ToyTask):
    name = "toy-dpo"
    loss = "dpo"

    def examples(self, split: Split) -> list[PreferenceExample]:
        offset = {"train": 0, "val": 1000, "test": 2000}[split]
        return [
            PreferenceExample(f"Q: is item {offset + i} blue? A:", " yes, it is", " no")
            for i in range(self.sizes[split])
        ]


def save_tiny(model: torch.nn.Module, tokenizer, folder: Path) -> Path:
    """A tiny model + the shared tokenizer as a loadable Hugging Face folder."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder

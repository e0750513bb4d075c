"""Batched greedy generation with left padding, returning only the generated continuations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig

from lofit.evaluation import check_batch_size

if TYPE_CHECKING:
    from lofit.backbone import Backbone


def _left_padded(token_lists: Sequence[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids in token_lists)
    input_ids = torch.full((len(token_lists), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(token_lists), width), dtype=torch.long)
    for row, ids in enumerate(token_lists):
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, width - len(ids) :] = 1
    return input_ids.to(device), attention_mask.to(device)


def decode_continuation(backbone: Backbone, prompt_ids: list[int], new_ids: list[int]) -> str:
    """Text the new tokens add to the prompt.

    Decoding the new tokens alone can drop a leading space (SentencePiece), so the continuation
    is the decoded prompt+new text minus the decoded prompt whenever the latter is its prefix.
    """
    tokenizer = backbone.tokenizer
    full = tokenizer.decode(prompt_ids + new_ids, skip_special_tokens=True)
    prefix = tokenizer.decode(prompt_ids, skip_special_tokens=True)
    if full.startswith(prefix):
        return full[len(prefix) :]
    return tokenizer.decode(new_ids, skip_special_tokens=True)


def _until_eos(ids: list[int], eos_ids: set[int]) -> list[int]:
    for position, token in enumerate(ids):
        if token in eos_ids:
            return ids[:position]
    return ids


@torch.no_grad()
def greedy_generate(
    backbone: Backbone, prompts: Sequence[str], max_new_tokens: int = 16, batch_size: int = 16
) -> list[str]:
    """Greedy continuations of `prompts` (BOS rule of the backbone applied), in input order."""
    check_batch_size(batch_size)
    model, tokenizer = backbone.model, backbone.tokenizer
    device = next(model.parameters()).device
    eos = tokenizer.eos_token_id
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=eos
    )
    eos_ids = {eos} if eos is not None else set()
    continuations: list[str] = []
    for start in tqdm(range(0, len(prompts), batch_size), desc="generation", unit="batch", mininterval=5):
        token_lists = [backbone.encode(prompt) for prompt in prompts[start : start + batch_size]]
        input_ids, attention_mask = _left_padded(token_lists, tokenizer.pad_token_id, device)
        output = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
        for prompt_ids, row in zip(token_lists, output[:, input_ids.shape[1] :].tolist()):
            continuations.append(decode_continuation(backbone, prompt_ids, _until_eos(row, eos_ids)))
    return continuations

"""Batched greedy generation with left padding, returning only the generated continuations."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

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


class _StopWhenFinal(StoppingCriteria):
    """Ends each row once its decoded continuation is final for the parser, remembering its length.

    The rule sees exactly the text the final decoding produces for those tokens. Tokens after a
    row's final length (pad, or more text when there is no EOS) are dropped, so a row reads the
    same whether or not other rows made the batch run on.
    """

    def __init__(
        self, backbone: Backbone, token_lists: Sequence[list[int]], prompt_width: int, eos_ids: set[int], is_final: Callable[[str], bool]
    ) -> None:
        self.backbone, self.token_lists, self.prompt_width = backbone, token_lists, prompt_width
        self.eos_ids, self.is_final = eos_ids, is_final
        self.final_lengths: list[int | None] = [None] * len(token_lists)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor | None, **kwargs) -> torch.BoolTensor:
        for row, new_ids in enumerate(input_ids[:, self.prompt_width :].tolist()):
            if self.final_lengths[row] is not None or self.eos_ids.intersection(new_ids):
                continue  # final already, or ended by EOS (generate itself stops that row)
            if self.is_final(decode_continuation(self.backbone, self.token_lists[row], new_ids)):
                self.final_lengths[row] = len(new_ids)
        return torch.tensor([length is not None for length in self.final_lengths], device=input_ids.device)


@torch.no_grad()
def greedy_generate(
    backbone: Backbone,
    prompts: Sequence[str],
    max_new_tokens: int = 16,
    batch_size: int = 16,
    is_final: Callable[[str], bool] | None = None,
) -> list[str]:
    """Greedy continuations of `prompts` (BOS rule of the backbone applied), in input order.

    With `is_final` (continuation -> whether more text could still change the parsed answer), a
    batch stops once every row is final or done, and each row is cut where it became final.
    """
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
        stop = None if is_final is None else _StopWhenFinal(backbone, token_lists, input_ids.shape[1], eos_ids, is_final)
        output = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            generation_config=config,
            stopping_criteria=StoppingCriteriaList([] if stop is None else [stop]),
        )
        rows = output[:, input_ids.shape[1] :].tolist()
        final_lengths = [None] * len(rows) if stop is None else stop.final_lengths
        for prompt_ids, row, final_length in zip(token_lists, rows, final_lengths, strict=True):
            continuations.append(decode_continuation(backbone, prompt_ids, _until_eos(row[:final_length], eos_ids)))
    return continuations

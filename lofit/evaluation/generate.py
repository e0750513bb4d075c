"""Batched greedy generation with left padding, returning only the generated continuations.

A prompt prefix shared by every prompt (few-shot examples) is encoded once: its KV cache is copied
to each batch, and each row's own tokens follow it with the row's padding placed between prefix and
question, masked out. Position ids come from the attention mask (cumsum), so every row sees the
positions it would see as one unpadded sequence. Prefix and prompt are always tokenized apart, so
the cached and uncached inputs are the same token ids whatever the tokenizer merges at the seam.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path
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


def prompt_token_ids(backbone: Backbone, prompts: Sequence[str], prefix: str = "") -> tuple[list[int], list[list[int]]]:
    """(prefix ids, each prompt's ids): the BOS rule goes on the prefix when there is one, else on
    each prompt; the model's input for a prompt is the prefix ids followed by the prompt's ids.

    In a chat-template prompt format, prefix + prompt is one user turn rendered whole, so no
    prefix is split off (its KV cache is not shared; the ids are those of the rendered turn)."""
    if backbone.prompt_format.chat_template:
        return [], [backbone.encode_prompt(prefix + prompt) for prompt in prompts]
    if not prefix:
        return [], [backbone.encode_prompt(prompt) for prompt in prompts]
    return backbone.encode(prefix), [backbone.encode(prompt, add_bos=False) for prompt in prompts]


@torch.no_grad()
def generate_ids(
    backbone: Backbone,
    token_lists: Sequence[list[int]],
    max_new_tokens: int = 16,
    batch_size: int = 16,
    prefix_ids: Sequence[int] = (),
    is_final: Callable[[str], bool] | None = None,
) -> list[list[int]]:
    """Greedy new token ids (up to EOS) after `prefix_ids` + each token list, in input order.

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
    prefix = torch.tensor([list(prefix_ids)], dtype=torch.long, device=device)
    prefix_cache = model(input_ids=prefix, use_cache=True).past_key_values if prefix_ids else None
    generated: list[list[int]] = []
    for start in tqdm(range(0, len(token_lists), batch_size), desc="generation", unit="batch", mininterval=5):
        chunk = token_lists[start : start + batch_size]
        input_ids, attention_mask = _left_padded(chunk, tokenizer.pad_token_id, device)
        cache = None
        if prefix_cache is not None:
            # [prefix | padding | prompt]: the padding sits after the cached prefix and is masked out
            input_ids = torch.cat([prefix.expand(len(chunk), -1), input_ids], dim=1)
            attention_mask = torch.cat([torch.ones_like(input_ids[:, : prefix.shape[1]]), attention_mask], dim=1)
            cache = copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(len(chunk))
        stop = None if is_final is None else _StopWhenFinal(backbone, chunk, input_ids.shape[1], eos_ids, is_final)
        output = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            past_key_values=cache,
            generation_config=config,
            stopping_criteria=StoppingCriteriaList([] if stop is None else [stop]),
        )
        rows = output[:, input_ids.shape[1] :].tolist()
        final_lengths = [None] * len(rows) if stop is None else stop.final_lengths
        generated += [_until_eos(row[:length], eos_ids) for row, length in zip(rows, final_lengths, strict=True)]
    return generated


def greedy_generate(
    backbone: Backbone,
    prompts: Sequence[str],
    max_new_tokens: int = 16,
    batch_size: int = 16,
    prefix: str = "",
    is_final: Callable[[str], bool] | None = None,
) -> list[str]:
    """Greedy continuations of `prefix` + each prompt (BOS rule of the backbone applied), in input
    order; the prefix is encoded once and its KV cache shared by every batch. `is_final`: see
    `generate_ids`."""
    prefix_ids, token_lists = prompt_token_ids(backbone, prompts, prefix)
    new_ids = generate_ids(backbone, token_lists, max_new_tokens, batch_size, prefix_ids, is_final)
    return [decode_continuation(backbone, ids, new) for ids, new in zip(token_lists, new_ids)]


def write_continuations(
    backbone: Backbone,
    prompts: Sequence[str],
    max_new_tokens: int,
    out_file: str | Path,
    batch_size: int = 16,
    is_final: Callable[[str], bool] | None = None,
    model_label: str = "model",
) -> list[dict]:
    """Greedy continuations of task prompts as rows {prompt, generation, model}, written atomically
    as JSONL (`lofit generate` for tasks other than TruthfulQA)."""
    from lofit.io import write_jsonl

    generations = greedy_generate(backbone, prompts, max_new_tokens, batch_size, is_final=is_final)
    rows = [{"prompt": prompt, "generation": text, "model": model_label} for prompt, text in zip(prompts, generations)]
    write_jsonl(out_file, rows)
    return rows

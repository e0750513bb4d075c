"""Tokenize task examples and pad them into training batches.

Labels are computed from token boundaries, never by searching for a response template: the
prompt and the answer are encoded separately (the prompt by `backbone.prompt_body`, in the task's
prompt format, with the family's BOS rule; the answer as plain text) and their ids concatenated, so the loss mask is exact even when the
answer follows the prompt with no space. Every answer ends with EOS, which is supervised too.

Truncation rules (all lengths in tokens, BOS included):
- preference pairs (DPO): the prompt keeps its BOS and its last `max_prompt_length` tokens (the
  end holds the question); each answer + EOS keeps its first `max_length - len(prompt)` tokens.
- SFT: the answer + EOS keeps its first `max_length - len(BOS) - 1` tokens (at least one prompt
  token must remain to predict the first answer token); the prompt keeps its BOS and as many of
  its last tokens as still fit in `max_length`.
Batches are right-padded to the longest sequence in the batch; pads are masked out of attention
and labels. Every example carries its dataset `index` (the key of the DPO reference cache).

A split is tokenized with `datasets.Dataset.map` over its example fields; the result keeps the
features as Python ints in fixed columns (`SFT_FEATURES` / `PREFERENCE_FEATURES`), so a
`DataLoader` hands the collator the same dicts of lists as a plain list of features would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch
from datasets import Dataset, List, Value
from datasets import Features as ColumnTypes
from datasets.fingerprint import generate_random_fingerprint

from lofit.data.examples import Example, PreferenceExample, SFTExample

if TYPE_CHECKING:
    from lofit.backbone import Backbone

IGNORE_INDEX = -100
Features = dict[str, object]

# column types of a tokenized split (Features above is one row)
_IDS = List(Value("int64"))
SFT_FEATURES = ColumnTypes({"index": Value("int64"), "input_ids": _IDS, "labels": _IDS})
PREFERENCE_FEATURES = ColumnTypes(
    {"index": Value("int64")}
    | {f"{side}_{name}": _IDS for side in ("chosen", "rejected") for name in ("input_ids", "labels")}
)


def _eos_id(backbone: Backbone) -> int:
    eos = backbone.tokenizer.eos_token_id
    if eos is None:
        raise ValueError(f"tokenizer of '{backbone.name}' has no EOS token; answers must end with one")
    return eos


def encode_prompt(backbone: Backbone, prompt: str, max_tokens: int) -> list[int]:
    """BOS (per family) + the last tokens of the prompt (in the backbone's prompt format), `max_tokens` in all."""
    bos = backbone.bos_ids
    body = backbone.prompt_body(prompt)
    room = max_tokens - len(bos)
    if room < 0:
        raise ValueError(f"a prompt limit of {max_tokens} tokens leaves no room after BOS")
    return bos + body[max(0, len(body) - room) :]


def encode_answer(backbone: Backbone, answer: str, max_tokens: int) -> list[int]:
    """The answer's tokens followed by EOS, cut to the first `max_tokens`."""
    return (backbone.encode(answer, add_bos=False) + [_eos_id(backbone)])[:max_tokens]


def tokenize_sft(backbone: Backbone, example: SFTExample, index: int, max_length: int) -> Features:
    """input_ids = prompt + answer + EOS; labels = -100 on the prompt, the ids on the answer."""
    bos = len(backbone.bos_ids)
    if max_length < bos + 2:
        raise ValueError(f"max_length={max_length} cannot hold a prompt token and an answer token")
    answer = encode_answer(backbone, example.completion, max_length - bos - 1)
    prompt = encode_prompt(backbone, example.prompt, max_length - len(answer))
    return {"index": index, "input_ids": prompt + answer, "labels": [IGNORE_INDEX] * len(prompt) + answer}


def tokenize_preference(
    backbone: Backbone, example: PreferenceExample, index: int, max_length: int, max_prompt_length: int
) -> Features:
    """Chosen and rejected sequences sharing one truncated prompt."""
    if max_prompt_length >= max_length:
        raise ValueError(f"max_prompt_length={max_prompt_length} must be below max_length={max_length}")
    prompt = encode_prompt(backbone, example.prompt, max_prompt_length)
    features: Features = {"index": index}
    for side, text in (("chosen", example.chosen), ("rejected", example.rejected)):
        answer = encode_answer(backbone, text, max_length - len(prompt))
        features[f"{side}_input_ids"] = prompt + answer
        features[f"{side}_labels"] = [IGNORE_INDEX] * len(prompt) + answer
    return features


def _tokenize_row(
    row: dict[str, str], index: int, backbone: Backbone, max_length: int, max_prompt_length: int
) -> Features:
    if "chosen" in row:
        return tokenize_preference(backbone, PreferenceExample(**row), index, max_length, max_prompt_length)
    return tokenize_sft(backbone, SFTExample(**row), index, max_length)


def tokenize_dataset(
    backbone: Backbone, examples: Sequence[Example], max_length: int = 512, max_prompt_length: int = 128
) -> Dataset:
    """Tokenize a split with `Dataset.map`; the position in `examples` becomes each row's `index`."""
    kinds = {type(example) for example in examples}
    for index, example in enumerate(examples):
        if not isinstance(example, (SFTExample, PreferenceExample)):
            raise TypeError(f"example {index} is a {type(example).__name__}, not an SFT or preference example")
    if len(kinds) > 1:
        raise TypeError("a split mixes SFT and preference examples; the collator needs one kind")
    rows = Dataset.from_list([asdict(example) for example in examples])
    return rows.map(
        _tokenize_row,
        with_indices=True,
        fn_kwargs={"backbone": backbone, "max_length": max_length, "max_prompt_length": max_prompt_length},
        remove_columns=rows.column_names,
        features=PREFERENCE_FEATURES if PreferenceExample in kinds else SFT_FEATURES,
        # in memory and never cached, like `from_list`; hashing `fn_kwargs` would pickle the whole model
        new_fingerprint=generate_random_fingerprint(),
        desc="Tokenizing",
    )


def tokenize_examples(
    backbone: Backbone, examples: Sequence[Example], max_length: int = 512, max_prompt_length: int = 128
) -> list[Features]:
    """`tokenize_dataset` as a list of feature dicts."""
    return tokenize_dataset(backbone, examples, max_length, max_prompt_length).to_list()


def pad_right(sequences: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    """Stack sequences into a (N, longest) tensor, filling on the right."""
    longest = max(len(seq) for seq in sequences)
    out = torch.full((len(sequences), longest), value, dtype=torch.long)
    for row, seq in enumerate(sequences):
        out[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return out


@dataclass(frozen=True)
class PadCollator:
    """DataLoader collate function for SFT and preference features (picklable for workers).

    A preference batch of B pairs becomes 2B rows, chosen first then rejected, so both sides
    run in one forward pass; `index` stays (B,).
    """

    pad_token_id: int

    def __call__(self, features: Sequence[Features]) -> dict[str, torch.Tensor]:
        if "chosen_input_ids" in features[0]:
            ids = [f["chosen_input_ids"] for f in features] + [f["rejected_input_ids"] for f in features]
            labels = [f["chosen_labels"] for f in features] + [f["rejected_labels"] for f in features]
        else:
            ids = [f["input_ids"] for f in features]
            labels = [f["labels"] for f in features]
        input_ids = pad_right(ids, self.pad_token_id)
        attention_mask = pad_right([[1] * len(seq) for seq in ids], 0)
        return {
            "index": torch.tensor([f["index"] for f in features], dtype=torch.long),
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": pad_right(labels, IGNORE_INDEX),
        }

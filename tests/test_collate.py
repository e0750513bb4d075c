"""Tokenization, truncation and padding of training batches."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from lofit.data.collate import (
    IGNORE_INDEX,
    PREFERENCE_FEATURES,
    SFT_FEATURES,
    PadCollator,
    tokenize_dataset,
    tokenize_examples,
    tokenize_preference,
    tokenize_sft,
)
from lofit.data.examples import PreferenceExample, SFTExample


def answer_ids(features: dict, key: str = "labels") -> list[int]:
    return [token for token in features[key] if token != IGNORE_INDEX]


@pytest.mark.parametrize("family", ["llama", "gemma"])
def test_sft_labels_cover_exactly_the_completion_and_eos(tiny_backbone_factory, family):
    backbone = tiny_backbone_factory(family)
    tok = backbone.tokenizer
    example = SFTExample("Q: What is the capital of France? A:", "Paris")  # no space: a token boundary case
    features = tokenize_sft(backbone, example, index=3, max_length=512)
    unmasked = answer_ids(features)
    assert unmasked[-1] == tok.eos_token_id
    assert tok.decode(unmasked) == "Paris" + tok.eos_token
    prompt_part = features["input_ids"][: len(features["input_ids"]) - len(unmasked)]
    assert tok.decode(prompt_part, skip_special_tokens=True) == example.prompt
    assert prompt_part[: len(backbone.bos_ids)] == backbone.bos_ids  # BOS only where the family needs it
    assert features["index"] == 3


def test_preference_pair_shares_the_prompt_and_masks_it(tiny_backbone):
    tok = tiny_backbone.tokenizer
    features = tokenize_preference(
        tiny_backbone, PreferenceExample("Q: Is the sky green? A:", " No.", " Yes."), 0, 512, 128
    )
    assert tok.decode(answer_ids(features, "chosen_labels")) == " No." + tok.eos_token
    assert tok.decode(answer_ids(features, "rejected_labels")) == " Yes." + tok.eos_token
    n_prompt = features["chosen_labels"].count(IGNORE_INDEX)
    assert features["chosen_input_ids"][:n_prompt] == features["rejected_input_ids"][:n_prompt]


def test_preference_truncation_keeps_prompt_end_and_answer_start(tiny_backbone_factory):
    backbone = tiny_backbone_factory("gemma")  # has a BOS that must survive truncation
    tok = backbone.tokenizer
    prompt = " ".join(f"word{i}" for i in range(200)) + " Q: final question? A:"
    answer = " " + " ".join(f"answer{i}" for i in range(100))
    features = tokenize_preference(backbone, PreferenceExample(prompt, answer, " short"), 0, 64, 16)
    n_prompt = features["chosen_labels"].count(IGNORE_INDEX)
    prompt_ids = features["chosen_input_ids"][:n_prompt]
    assert n_prompt == 16 and prompt_ids[0] == tok.bos_token_id
    assert tok.decode(prompt_ids[1:]).endswith("final question? A:")
    assert len(features["chosen_input_ids"]) == 64
    assert tok.decode(answer_ids(features, "chosen_labels")).startswith(" answer0 answer1")
    assert tok.decode(answer_ids(features, "rejected_labels")) == " short" + tok.eos_token


def test_sft_truncation_keeps_answer_and_prompt_end(tiny_backbone):
    tok = tiny_backbone.tokenizer
    prompt = " ".join(f"word{i}" for i in range(300)) + " Answer:"
    features = tokenize_sft(tiny_backbone, SFTExample(prompt, " yes"), 0, max_length=32)
    assert len(features["input_ids"]) == 32
    assert tok.decode(answer_ids(features)) == " yes" + tok.eos_token
    assert tok.decode(features["input_ids"][: 32 - len(answer_ids(features))]).endswith(" Answer:")


@pytest.fixture(scope="module")
def module_backbone(tokenizer):
    from conftest import tiny_model

    from lofit.backbone import wrap_model

    return wrap_model(tiny_model("gemma", len(tokenizer)), tokenizer, name="tiny-gemma")


@settings(max_examples=40, deadline=None)
@given(
    prompt=st.text(min_size=1, max_size=60),
    answer=st.text(min_size=1, max_size=60),
    max_length=st.integers(min_value=4, max_value=40),
)
def test_truncation_limits_hold_for_any_text(module_backbone, prompt, answer, max_length):
    full_answer = module_backbone.encode(answer, add_bos=False) + [module_backbone.tokenizer.eos_token_id]
    sft = tokenize_sft(module_backbone, SFTExample(prompt, answer), 0, max_length)
    assert len(sft["input_ids"]) <= max_length and len(sft["input_ids"]) == len(sft["labels"])
    assert sft["input_ids"][0] == module_backbone.tokenizer.bos_token_id
    assert answer_ids(sft) == full_answer[: len(answer_ids(sft))]  # a prefix of answer + EOS
    example = PreferenceExample(prompt, answer, answer)
    pair = tokenize_preference(module_backbone, example, 0, max_length, max_length // 2)
    assert pair["chosen_labels"].count(IGNORE_INDEX) <= max_length // 2
    assert len(pair["chosen_input_ids"]) <= max_length
    assert answer_ids(pair, "chosen_labels") == full_answer[: len(answer_ids(pair, "chosen_labels"))]


def test_collator_right_pads_and_keeps_indices(tiny_backbone):
    pad = tiny_backbone.tokenizer.pad_token_id
    examples = [SFTExample("Q: a long question here? A:", " x"), SFTExample("Q:", " y")]
    features = tokenize_examples(tiny_backbone, examples)
    batch = PadCollator(pad)(features)
    lengths = [len(f["input_ids"]) for f in features]
    assert batch["input_ids"].shape == (2, max(lengths))
    assert batch["index"].tolist() == [0, 1]
    for row, length in enumerate(lengths):
        assert batch["attention_mask"][row].tolist() == [1] * length + [0] * (max(lengths) - length)
        assert (batch["labels"][row, length:] == IGNORE_INDEX).all()
        assert (batch["input_ids"][row, length:] == pad).all()
        assert batch["input_ids"][row, :length].tolist() == features[row]["input_ids"]


def test_collator_stacks_chosen_then_rejected(tiny_backbone):
    pairs = [PreferenceExample("Q: one? A:", " a", " bb cc"), PreferenceExample("Q: two? A:", " d", " e")]
    features = tokenize_examples(tiny_backbone, pairs)
    batch = PadCollator(tiny_backbone.tokenizer.pad_token_id)(features)
    assert batch["input_ids"].shape[0] == 4 and batch["index"].tolist() == [0, 1]
    for row, (side, pair) in enumerate([("chosen", 0), ("chosen", 1), ("rejected", 0), ("rejected", 1)]):
        ids = features[pair][f"{side}_input_ids"]
        assert batch["input_ids"][row, : len(ids)].tolist() == ids


def test_unknown_example_type_is_rejected(tiny_backbone):
    with pytest.raises(TypeError, match="not an SFT or preference example"):
        tokenize_examples(tiny_backbone, [("prompt", "answer")])
    with pytest.raises(TypeError, match="mixes SFT and preference examples"):
        tokenize_examples(tiny_backbone, [SFTExample("p", "a"), PreferenceExample("p", "a", "b")])


SFT_SPLIT = [SFTExample("Q: a long question here? A:", " x"), SFTExample("Q:", " y"), SFTExample("Q: z? A:", "zz top")]
PREFERENCE_SPLIT = [PreferenceExample("Q: one? A:", " a", " bb cc"), PreferenceExample("Q: two, longer? A:", " d", " e")]


@pytest.mark.parametrize("examples, columns", [(SFT_SPLIT, SFT_FEATURES), (PREFERENCE_SPLIT, PREFERENCE_FEATURES)])
def test_mapped_split_equals_hand_tokenized_examples(tiny_backbone, examples, columns):
    """`Dataset.map` yields the per-example features, and a DataLoader over it the same batches."""
    max_length, max_prompt_length = 12, 6  # truncation applies too
    dataset = tokenize_dataset(tiny_backbone, examples, max_length, max_prompt_length)
    by_hand = [
        tokenize_preference(tiny_backbone, example, index, max_length, max_prompt_length)
        if isinstance(example, PreferenceExample)
        else tokenize_sft(tiny_backbone, example, index, max_length)
        for index, example in enumerate(examples)
    ]
    assert dataset.features == columns and list(columns) == list(by_hand[0])
    rows = dataset.to_list()
    assert rows == by_hand and all(type(token) is int for row in rows for ids in list(row.values())[1:] for token in ids)
    collate = PadCollator(tiny_backbone.tokenizer.pad_token_id)
    for batch, start in zip(DataLoader(dataset, batch_size=2, collate_fn=collate), range(0, len(by_hand), 2)):
        expected = collate(by_hand[start : start + 2])
        assert batch.keys() == expected.keys() and all(torch.equal(batch[k], expected[k]) for k in batch)


def test_impossible_limits_are_rejected(tiny_backbone_factory):
    backbone = tiny_backbone_factory("gemma")
    with pytest.raises(ValueError, match="max_prompt_length"):
        tokenize_preference(backbone, PreferenceExample("p", "a", "b"), 0, max_length=16, max_prompt_length=16)
    with pytest.raises(ValueError, match="max_length=2"):
        tokenize_sft(backbone, SFTExample("p", "a"), 0, max_length=2)  # BOS + one prompt token leave no room

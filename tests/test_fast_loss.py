"""The answer-only, length-chunked training forward gives the loss and gradients of the full-logits one.

The reference below is the computation `InterventionModule` did before (full logits of the
right-padded batch, shifted, cross-entropy with `ignore_index`), written out here. Tolerance:
rtol 1e-5, atol 1e-6 in float32 (chunks change matmul shapes and the SDPA mask, hence rounding).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_FAMILIES, tiny_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lofit.backbone import Backbone, wrap_model
from lofit.data.collate import IGNORE_INDEX, pad_right
from lofit.losses import AnswerLogits, dpo_loss
from lofit.methods.configs import REDStepConfig
from lofit.methods.red import REDModule
from lofit.training import BiasTuningModule, HeadSelectionModule, SelectionConfig, TuningConfig
from lofit.training.answers import answer_logits, head_logits, plan_chunks
from lofit.training.module import InterventionModule

TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}
MAX_ROWS = 6


@pytest.fixture(scope="module")
def backbone(tokenizer) -> Backbone:
    """One tiny Llama for the module (each test attaches and detaches its own edit)."""
    return wrap_model(tiny_model("llama", len(tokenizer), seed=3), tokenizer, name="tiny-llama")


def make_module(backbone: Backbone, kind: str, loss: str) -> InterventionModule:
    if kind == "step1":
        module = HeadSelectionModule(backbone, loss, SelectionConfig(init_std=0.5))
    elif kind == "step2":
        heads = [((1, 2), 1.0), ((0, 1), 0.5), ((1, 0), 0.2)]
        module = BiasTuningModule(backbone, loss, TuningConfig(heads="unused", init_std=0.5), top_heads=heads)
    else:
        module = REDModule(backbone, loss, REDStepConfig())
        with torch.no_grad():
            module.intervention.bias.normal_(std=0.1, generator=torch.Generator().manual_seed(0))
    return module


# ---------------------------------------------------------------------------- batches
row_shapes = st.tuples(st.integers(1, 14), st.integers(0, 7))  # (prompt tokens, answer tokens)


def make_batch(shapes: list[tuple[int, int]], vocab: int, seed: int, pairs: bool) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids, labels = [], []
    for prompt, answer in shapes:
        tokens = torch.randint(0, vocab, (prompt + answer,), generator=generator).tolist()
        ids.append(tokens)
        labels.append([IGNORE_INDEX] * prompt + tokens[prompt:])
    rows = len(shapes) // 2 if pairs else len(shapes)
    return {
        "index": torch.arange(rows),
        "input_ids": pad_right(ids, 0),
        "attention_mask": pad_right([[1] * len(seq) for seq in ids], 0),
        "labels": pad_right(labels, IGNORE_INDEX),
    }


def full_logits(module: InterventionModule, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The old path: every position's logits, shifted, and the shifted labels."""
    out = module.backbone.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    return out.logits[:, :-1].float(), batch["labels"][:, 1:]


def old_sft_loss(module, batch) -> torch.Tensor:
    logits, labels = full_logits(module, batch)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX)


def old_logps(module, batch) -> torch.Tensor:
    logits, labels = full_logits(module, batch)
    nll = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")
    return -nll.sum(dim=1)


def old_dpo_loss(module, batch) -> torch.Tensor:
    pairs = batch["index"].numel()
    with torch.no_grad(), module.intervention.disabled():
        reference = old_logps(module, batch)
    policy = old_logps(module, batch)
    beta = module.config.beta
    return dpo_loss(policy[:pairs], policy[pairs:], reference[:pairs], reference[pairs:], beta).loss


def loss_and_grads(module, compute) -> tuple[torch.Tensor, list[torch.Tensor]]:
    params = list(module.intervention.parameters())
    for param in params:
        param.grad = None
    loss = compute()
    loss.backward()
    return loss.detach(), [param.grad.clone() for param in params]


def assert_same_loss_and_grads(module, batch, old) -> None:
    with module.intervention.applied(module.backbone.model):
        old_loss, old_grads = loss_and_grads(module, lambda: old(module, batch))
        new_loss, new_grads = loss_and_grads(module, lambda: module.task_loss(batch, "train")[0])
    torch.testing.assert_close(new_loss, old_loss, **TOLERANCE)
    for new, ref in zip(new_grads, old_grads):
        torch.testing.assert_close(new, ref, **TOLERANCE)


# ---------------------------------------------------------------------------- loss and gradients
@pytest.mark.parametrize("kind", ["step1", "step2", "red"])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shapes=st.lists(row_shapes, min_size=1, max_size=MAX_ROWS), seed=st.integers(0, 2**16))
def test_sft_loss_and_gradients_equal_the_full_logits_path(backbone, kind, shapes, seed):
    shapes[0] = (shapes[0][0], max(1, shapes[0][1]))  # at least one answer token in the batch
    module = make_module(backbone, kind, "sft")
    assert_same_loss_and_grads(module, make_batch(shapes, len(backbone.tokenizer), seed, pairs=False), old_sft_loss)


@pytest.mark.parametrize("kind", ["step1", "step2"])
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pairs=st.lists(st.tuples(st.integers(1, 12), st.integers(1, 7), st.integers(1, 7)), min_size=1, max_size=4),
    seed=st.integers(0, 2**16),
)
def test_dpo_loss_reference_and_gradients_equal_the_full_logits_path(backbone, kind, pairs, seed):
    shapes = [(prompt, chosen) for prompt, chosen, _ in pairs] + [(prompt, rejected) for prompt, _, rejected in pairs]
    batch = make_batch(shapes, len(backbone.tokenizer), seed, pairs=True)
    module = make_module(backbone, kind, "dpo")
    assert_same_loss_and_grads(module, batch, old_dpo_loss)
    with torch.no_grad(), module.intervention.disabled():
        reference = old_logps(module, batch)
    cached = torch.tensor([module.reference_logps["train"][i] for i in range(len(pairs))])
    torch.testing.assert_close(torch.cat([cached[:, 0], cached[:, 1]]), reference, **TOLERANCE)


def test_a_batch_whose_answers_are_all_truncated_away_is_an_error(backbone):
    batch = make_batch([(6, 2), (4, 3)], len(backbone.tokenizer), 0, pairs=False)
    batch["labels"][:] = IGNORE_INDEX
    module = make_module(backbone, "step1", "sft")
    with module.intervention.applied(backbone.model), pytest.raises(ValueError, match="no answer tokens"):
        module.task_loss(batch, "train")


# ---------------------------------------------------------------------------- families
@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_answer_logits_equal_the_models_own_for_every_family(tokenizer, family):
    overrides = {"final_logit_softcapping": 5.0} if family == "gemma3_text" else {}
    model = tiny_model(family, len(tokenizer), **overrides)
    batch = make_batch([(5, 3), (9, 4), (2, 1), (9, 4)], len(tokenizer), 1, pairs=False)
    with torch.no_grad():
        full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        ours = answer_logits(model, batch)
        expected = AnswerLogits.from_full(full, batch["labels"])
        unmasked = model.base_model(input_ids=batch["input_ids"][1:2]).last_hidden_state
        masked = model.base_model(
            input_ids=batch["input_ids"][1:2], attention_mask=batch["attention_mask"][1:2]
        ).last_hidden_state
    torch.testing.assert_close(ours.logits, expected.logits, **TOLERANCE)
    assert torch.equal(ours.targets, expected.targets) and torch.equal(ours.rows, expected.rows)
    torch.testing.assert_close(head_logits(model, unmasked), head_logits(model, masked), **TOLERANCE)
    if overrides:
        assert ours.logits.abs().max() <= 5.0


# ---------------------------------------------------------------------------- chunks
@settings(max_examples=200, deadline=None)
@given(lengths=st.lists(st.integers(0, 300), max_size=16), overhead=st.integers(0, 400))
def test_chunks_hold_every_row_once_and_never_pad_more_than_the_batch(lengths, overhead):
    chunks = plan_chunks(lengths, overhead)
    rows = sorted(row for chunk in chunks for row in chunk)
    assert rows == [row for row, length in enumerate(lengths) if length > 0]
    padded = sum(len(chunk) * max(lengths[row] for row in chunk) for chunk in chunks)
    assert padded <= len(rows) * max(lengths, default=0)
    if overhead == 0:  # free chunks: no padding at all
        assert padded == sum(lengths)


def test_chunk_overhead_trades_padding_for_fewer_chunks():
    lengths = [10, 200, 11, 190, 12]
    assert plan_chunks(lengths, 0) == [[0], [2], [4], [3], [1]]
    assert plan_chunks(lengths, 50) == [[0, 2, 4], [3, 1]]
    assert plan_chunks(lengths, 10_000) == [[0, 2, 4, 3, 1]]

"""LoReFT on tiny models: orthonormal R, W = R is the identity, prompt positions only, training, save/load."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY_FAMILIES
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from synthetic import ToySFTTask

from lofit.cli import main
from lofit.data.collate import PadCollator, tokenize_examples
from lofit.errors import ConfigError
from lofit.families import decoder_layers
from lofit.io import read_json
from lofit.losses import completion_cross_entropy
from lofit.methods.configs import ReFTStepConfig
from lofit.methods.module import trainable_parameters
from lofit.methods.reft import (
    CONFIG_NAME,
    REFT_DIR,
    WEIGHTS_NAME,
    ReFTIntervention,
    ReFTModule,
    ReFTShape,
    edited_positions,
    load_reft,
    save_reft,
)
from lofit.training import DataConfig, TrainerConfig, ValidationConfig
from lofit.training.run import fit

CPU = TrainerConfig(accelerator="cpu", enable_progress_bar=False, log_every_n_steps=1, max_epochs=3)
IDS = torch.tensor([[5, 17, 300, 42, 9, 1200, 77, 3, 11, 12, 13, 14], [8, 8, 1000, 2, 64, 19, 4, 500, 6, 7, 9, 10]])
SMALL = ReFTStepConfig(rank=2, first=2, last=2)
MISSING_MODEL = "/nonexistent/lofit-test-model"


def logits(backbone, **inputs):
    with torch.no_grad():
        return backbone.model(**(inputs or {"input_ids": IDS})).logits


def edited_columns(backbone, layer: int, run=None, **inputs) -> list[list[set[int]]]:
    """For every forward that `run` (default: one forward of `inputs`) makes, per row, the columns
    whose layer output ReFT's hook changed (hooks placed before and after it see both)."""
    site = decoder_layers(backbone.model, backbone.family)[layer]
    raw, edited = [], []
    first = lambda out: out[0] if isinstance(out, tuple) else out  # noqa: E731
    before = site.register_forward_hook(lambda _m, _a, out: raw.append(first(out).detach()), prepend=True)
    after = site.register_forward_hook(lambda _m, _a, out: edited.append(first(out).detach()))
    try:
        with torch.no_grad():
            run() if run is not None else backbone.model(**inputs)
    finally:
        before.remove()
        after.remove()
    changed = [(r != e).any(-1) for r, e in zip(raw, edited)]
    return [[set(torch.nonzero(row).flatten().tolist()) for row in forward] for forward in changed]


def batch_of(backbone, n: int = 4):
    return PadCollator(backbone.tokenizer.pad_token_id)(tokenize_examples(backbone, ToySFTTask().examples("train")[:n]))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 5), st.integers(0, 12), st.integers(0, 6), st.integers(0, 6), st.booleans())
def test_positions_are_the_first_and_last_prompt_tokens(start, length, first, last, tied):
    positions = edited_positions(start, length, first, last, tied)
    columns = [col for col, _ in positions]
    assert len(columns) == len(set(columns)) == min(length, first + last) if first + last else not columns
    assert all(start <= col < start + length for col in columns)
    suffix = {col for col, which in positions if which == (0 if tied or first == 0 else 1)}
    assert set(range(start + max(length - last, 0), start + length)) <= suffix
    prefix, suffix_all = range(start, start + min(first, length)), range(start + max(length - last, 0), start + length)
    assert set(columns) == set(prefix) | set(suffix_all)
    assert {which for _, which in positions} <= ({0} if tied or not (first and last) else {0, 1})


@pytest.mark.parametrize("model_type", TINY_FAMILIES)
def test_w_equal_r_and_zero_bias_is_the_identity(tiny_backbone_factory, model_type):
    backbone = tiny_backbone_factory(model_type)
    base = logits(backbone)
    identity = ReFTIntervention.for_backbone(backbone, ReFTStepConfig(init="identity"))
    with identity.applied(backbone.model):
        assert torch.equal(logits(backbone), base)
    trained = ReFTIntervention.for_backbone(backbone)  # the training init: W random, not the identity
    with trained.applied(backbone.model):
        assert not torch.allclose(logits(backbone), base)
        with trained.disabled():
            assert torch.equal(logits(backbone), base)
    assert torch.equal(logits(backbone), base)


def test_edit_is_loreft_at_the_chosen_positions(tiny_backbone):
    reft = ReFTIntervention.for_backbone(tiny_backbone, ReFTStepConfig(rank=3, first=1, last=2, layers=[1]))
    assert reft.num_trainable == 1 * 2 * (2 * 3 * 32 + 3)
    site = decoder_layers(tiny_backbone.model, tiny_backbone.family)[1]
    raw, edited = [], []
    with reft.applied(tiny_backbone.model):
        before = site.register_forward_hook(lambda _m, _a, out: raw.append(out), prepend=True)
        after = site.register_forward_hook(lambda _m, _a, out: edited.append(out))
        logits(tiny_backbone)
        before.remove()
        after.remove()
    h, out = raw[0][0] if isinstance(raw[0], tuple) else raw[0], edited[0][0] if isinstance(edited[0], tuple) else edited[0]
    layer = reft.layers[0]
    R, W, b = layer.rows.weight.detach(), layer.weight.detach(), layer.bias.detach()
    width = IDS.shape[1]
    for col, which in ((0, 0), (width - 2, 1), (width - 1, 1)):
        expected = h[:, col] + (h[:, col] @ W[which].T + b[which] - h[:, col] @ R[which].T) @ R[which]
        torch.testing.assert_close(out[:, col], expected)
    torch.testing.assert_close(out[:, 1 : width - 2], h[:, 1 : width - 2], rtol=0, atol=0)


def test_rows_of_r_stay_orthonormal_through_training(tiny_backbone):
    reft = ReFTIntervention.for_backbone(tiny_backbone, ReFTStepConfig(rank=4))
    start = reft.rotations().detach().clone()
    batch = batch_of(tiny_backbone)
    optimizer = torch.optim.AdamW(reft.parameters(), lr=5e-2, weight_decay=0.0)  # the module's optimiser
    with reft.applied(tiny_backbone.model), reft.prompts_of(batch["input_ids"], batch["attention_mask"], batch["labels"]):
        for _ in range(10):
            optimizer.zero_grad()
            out = tiny_backbone.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            completion_cross_entropy(out, batch["labels"]).backward()
            optimizer.step()
    rotation = reft.rotations().detach()
    gram = rotation @ rotation.transpose(-1, -2)
    torch.testing.assert_close(gram, torch.eye(4).expand_as(gram), rtol=0, atol=1e-5)
    assert (rotation - start).abs().max() > 1e-2
    assert all(p.grad is None for p in tiny_backbone.model.parameters())
    assert trainable_parameters(tiny_backbone.model, reft) == reft.num_trainable == 2 * 2 * (2 * 4 * 32 + 4)


def test_training_rows_are_edited_at_their_prompt_like_generation(tiny_backbone):
    """Right-padded prompt + answer rows (training) and left-padded prompts (generation) agree."""
    reft = ReFTIntervention.for_backbone(tiny_backbone, SMALL)
    batch = batch_of(tiny_backbone)
    prompt_lengths = [(row != -100).nonzero()[0].item() for row in batch["labels"]]
    with reft.applied(tiny_backbone.model):
        with reft.prompts_of(batch["input_ids"], batch["attention_mask"], batch["labels"]):
            trained = edited_columns(tiny_backbone, 0, input_ids=batch["input_ids"],
                                     attention_mask=batch["attention_mask"])[0]
            # the same rows re-ordered and re-padded (as a length-sorted micro-batch) are found by their prompts
            order = [2, 0]
            width = int(batch["attention_mask"][order].sum(1).max())
            again = edited_columns(tiny_backbone, 0, input_ids=batch["input_ids"][order, :width],
                                   attention_mask=batch["attention_mask"][order, :width])[0]
            # a row run alone without its last token (the training module's chunks drop the final
            # EOS, which predicts nothing) and without a mask is found by its prompt
            real = int(batch["attention_mask"][1].sum())
            shortened = edited_columns(tiny_backbone, 0, input_ids=batch["input_ids"][1:2, : real - 1])[0]
        width = max(prompt_lengths)
        pad = tiny_backbone.tokenizer.pad_token_id
        ids = torch.full((len(prompt_lengths), width), pad)
        mask = torch.zeros_like(ids)
        for row, n in enumerate(prompt_lengths):
            ids[row, width - n :] = batch["input_ids"][row, :n]
            mask[row, width - n :] = 1
        generated = edited_columns(tiny_backbone, 0, input_ids=ids, attention_mask=mask)[0]
    for row, n in enumerate(prompt_lengths):
        expected = set(range(min(2, n))) | set(range(max(n - 2, 0), n))
        assert trained[row] == expected  # answers (columns >= n) untouched
        assert {col - (width - n) for col in generated[row]} == expected
    assert again == [trained[2], trained[0]]
    assert shortened == [trained[1]]


def test_generated_tokens_are_not_edited(tiny_backbone):
    reft = ReFTIntervention.for_backbone(tiny_backbone, SMALL)
    mask = torch.ones_like(IDS)
    mask[1, :3] = 0  # left padding, as generation batches are
    with reft.applied(tiny_backbone.model):
        forwards = edited_columns(tiny_backbone, 1, run=lambda: tiny_backbone.model.generate(
            input_ids=IDS, attention_mask=mask, max_new_tokens=3, do_sample=False, pad_token_id=0))
    width = IDS.shape[1]
    assert len(forwards) == 3
    assert forwards[0] == [{0, 1, width - 2, width - 1}, {3, 4, width - 2, width - 1}]
    assert forwards[1:] == [[set(), set()]] * 2  # each decode step continues the cache: a generated token


def test_unregistered_rows_inside_a_training_context_are_refused(tiny_backbone):
    reft = ReFTIntervention.for_backbone(tiny_backbone, SMALL)
    batch = batch_of(tiny_backbone)
    with reft.applied(tiny_backbone.model), reft.prompts_of(batch["input_ids"], batch["attention_mask"], batch["labels"]):
        with pytest.raises(RuntimeError, match="starts with no registered training prompt"):
            logits(tiny_backbone)


def test_training_lowers_the_loss_and_the_edit_round_trips(tiny_backbone, tmp_path):
    task = ToySFTTask()
    val = PadCollator(tiny_backbone.tokenizer.pad_token_id)(tokenize_examples(tiny_backbone, task.examples("val")))
    weights = {name: p.detach().clone() for name, p in tiny_backbone.model.named_parameters()}
    module = ReFTModule(tiny_backbone, "sft", ReFTStepConfig(rank=4, first=3, last=3, lr=2e-2), tmp_path)

    def val_loss(reft: ReFTIntervention) -> float:
        with reft.applied(tiny_backbone.model), reft.prompts_of(val["input_ids"], val["attention_mask"], val["labels"]):
            out = tiny_backbone.model(input_ids=val["input_ids"], attention_mask=val["attention_mask"]).logits
        return completion_cross_entropy(out, val["labels"]).item()

    before = val_loss(module.intervention)
    fit(module, task, DataConfig(batch_size=4), CPU, ValidationConfig(), tmp_path)
    assert all(torch.equal(p, weights[name]) for name, p in tiny_backbone.model.named_parameters())
    loaded = load_reft(tmp_path / REFT_DIR, tiny_backbone)
    trained_loss = val_loss(module.intervention)
    assert trained_loss < before - 0.1
    assert val_loss(loaded) == pytest.approx(trained_loss, abs=1e-6)
    torch.testing.assert_close(loaded.rotations(), module.intervention.rotations(), rtol=0, atol=1e-6)
    for mine, theirs in zip(loaded.layers, module.intervention.layers):
        assert torch.equal(mine.weight, theirs.weight) and torch.equal(mine.bias, theirs.bias)
    with module.intervention.applied(tiny_backbone.model):
        trained_logits = logits(tiny_backbone)
    with loaded.applied(tiny_backbone.model):
        torch.testing.assert_close(logits(tiny_backbone), trained_logits, rtol=0, atol=1e-5)
    metrics = read_json(tmp_path / "metrics.json")
    assert metrics["trainable_parameters"] == 2 * 2 * (2 * 4 * 32 + 4)
    assert read_json(tmp_path / REFT_DIR / CONFIG_NAME)["layers"] == [0, 1]


def test_loading_does_not_move_the_global_rng(tiny_backbone, tmp_path):
    save_reft(ReFTIntervention.for_backbone(tiny_backbone), tmp_path, tiny_backbone)
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    load_reft(tmp_path, tiny_backbone)
    assert torch.equal(torch.rand(3), expected)


def test_bad_folders_are_refused_in_one_line(tiny_backbone, tiny_backbone_factory, shared_data, tmp_path, capsys):
    good = save_reft(ReFTIntervention.for_backbone(tiny_backbone, SMALL), tmp_path / "good", tiny_backbone)
    tensors = load_file(str(good / WEIGHTS_NAME))
    cases = {}
    cases["truncated"] = save_reft(ReFTIntervention.for_backbone(tiny_backbone, SMALL), tmp_path / "truncated", tiny_backbone)
    data = (cases["truncated"] / WEIGHTS_NAME).read_bytes()
    (cases["truncated"] / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])
    for name, change in {"nan": "weight", "skewed": "rotation"}.items():
        folder = save_reft(ReFTIntervention.for_backbone(tiny_backbone, SMALL), tmp_path / name, tiny_backbone)
        broken = dict(tensors)
        broken[change] = tensors[change].clone()
        broken[change][0, 0, 0, 0] = float("nan") if name == "nan" else 2.0
        save_file(broken, str(folder / WEIGHTS_NAME))
        cases[name] = folder
    messages = {"truncated": "truncated or corrupt", "nan": "NaN or Inf", "skewed": "not orthonormal"}
    for name, folder in cases.items():
        with pytest.raises(ValueError, match=messages[name]):
            load_reft(folder, tiny_backbone)
    for name in ("truncated", "nan"):  # the CLI checks the weights before the backbone loads
        with pytest.raises(SystemExit) as exit_info:
            main(["evaluate", "--task.name", "mquake", "--task.data_dir", str(shared_data), "--adapter", str(cases[name]),
                  "--backbone.model", MISSING_MODEL])
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2 and err.startswith("lofit: error:") and messages[name] in err and "\n" not in err
    other = tiny_backbone_factory("llama", hidden_size=64, intermediate_size=64)
    with pytest.raises(ValueError, match="for 2 layers × 32"):
        load_reft(good, other)
    config = json.loads((good / CONFIG_NAME).read_text())
    (good / CONFIG_NAME).write_text(json.dumps({**config, "layers": [0, 5]}))
    with pytest.raises(ValueError, match="not a valid ReFT config"):
        load_reft(good, tiny_backbone)


def test_export_refuses_a_reft_folder(tiny_backbone, tmp_path, capsys):
    folder = save_reft(ReFTIntervention.for_backbone(tiny_backbone), tmp_path / "reft", tiny_backbone)
    with pytest.raises(SystemExit):
        main(["export", str(folder), "--backbone.model", MISSING_MODEL])
    assert "export folds lofit adapters only, this is a reft folder" in capsys.readouterr().err


def test_config_refuses_bad_settings():
    for kwargs, message in (
        ({"rank": 0}, "rank must be a positive integer"),
        ({"first": -1}, "first must be a non-negative integer"),
        ({"first": 0, "last": 0}, "first > 0 or last > 0"),
        ({"layers": []}, "non-empty list"),
        ({"layers": [0, 0]}, "repeat"),
    ):
        with pytest.raises(ConfigError, match=message):
            ReFTStepConfig(**kwargs)
    with pytest.raises(ValueError, match="not all in 0..1"):
        ReFTShape(2, (0, 2), 32, 4, 1, 1, False)

"""RED on tiny models: identity at init, gradients only on RED's vectors, training lowers the loss."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from conftest import TINY_FAMILIES
from synthetic import ToyDPOTask, ToySFTTask

from lofit.data.collate import PadCollator, tokenize_examples
from lofit.io import read_json
from lofit.losses import completion_cross_entropy, sequence_logps
from lofit.methods.module import trainable_parameters
from lofit.methods.red import (
    RED_DIR,
    REDIntervention,
    REDModule,
    REDStepConfig,
    ffn_outputs,
    load_red,
    save_red,
)
from lofit.training import DataConfig, TrainerConfig, ValidationConfig
from lofit.training.run import fit

CPU = TrainerConfig(accelerator="cpu", enable_progress_bar=False, log_every_n_steps=1, max_epochs=3)
DATA = DataConfig(batch_size=4)
IDS = torch.tensor([[5, 17, 300, 42, 9, 1200, 77, 3], [8, 8, 1000, 2, 64, 19, 4, 500]])


def logits(backbone):
    with torch.no_grad():
        return backbone.model(input_ids=IDS).logits


@pytest.mark.parametrize("model_type", TINY_FAMILIES)
def test_identity_at_init_and_a_change_once_edited(tiny_backbone_factory, model_type):
    backbone = tiny_backbone_factory(model_type)
    base = logits(backbone)
    red = REDIntervention.for_backbone(backbone)
    assert red.num_trainable == 2 * backbone.model.config.num_hidden_layers * backbone.model.config.hidden_size
    with red.applied(backbone.model):
        assert torch.equal(logits(backbone), base)
        with torch.no_grad():
            red.scale[0].mul_(1.5)
        assert not torch.allclose(logits(backbone), base)
        with red.disabled():
            assert torch.equal(logits(backbone), base)
    assert torch.equal(logits(backbone), base)


def test_edit_is_scale_times_ffn_output_plus_bias(tiny_backbone):
    red = REDIntervention.for_backbone(tiny_backbone)
    with torch.no_grad():
        red.scale.normal_(generator=torch.Generator().manual_seed(0))
        red.bias.normal_(generator=torch.Generator().manual_seed(1))
    site = ffn_outputs(tiny_backbone.model)[1]
    raw, edited = [], []
    with red.applied(tiny_backbone.model):
        # prepended: runs before RED's hook (the raw FFN output); appended: after it (the edited one)
        before = site.register_forward_hook(lambda _m, _a, out: raw.append(out), prepend=True)
        after = site.register_forward_hook(lambda _m, _a, out: edited.append(out))
        logits(tiny_backbone)
        before.remove()
        after.remove()
    torch.testing.assert_close(edited[0], raw[0] * red.scale[1].detach() + red.bias[1].detach())
    assert not torch.allclose(edited[0], raw[0])


def test_gemma3_edits_the_normalised_ffn_output(tiny_backbone_factory):
    backbone = tiny_backbone_factory("gemma3_text")
    sites = ffn_outputs(backbone.model)
    assert all(type(site).__name__.endswith("RMSNorm") for site in sites)


def test_gradients_reach_only_red_vectors(tiny_backbone):
    red = REDIntervention.for_backbone(tiny_backbone)
    batch = PadCollator(tiny_backbone.tokenizer.pad_token_id)(
        tokenize_examples(tiny_backbone, ToySFTTask().examples("train")[:4])
    )
    with red.applied(tiny_backbone.model):
        out = tiny_backbone.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        completion_cross_entropy(out, batch["labels"]).backward()
    assert red.scale.grad is not None and red.bias.grad is not None
    assert torch.all(red.scale.grad.abs().sum(-1) > 0) and torch.all(red.bias.grad.abs().sum(-1) > 0)
    assert all(p.grad is None for p in tiny_backbone.model.parameters())
    assert trainable_parameters(tiny_backbone.model, red) == red.num_trainable


def test_training_lowers_the_loss_and_exports(tiny_backbone, tmp_path):
    task = ToySFTTask()
    before = task.evaluate(tiny_backbone, split="val")["answer_logprob"]
    weights = {name: p.detach().clone() for name, p in tiny_backbone.model.named_parameters()}
    module = REDModule(tiny_backbone, "sft", REDStepConfig(lr=5e-2), tmp_path)
    fit(module, task, DATA, CPU, ValidationConfig(), tmp_path)
    assert all(torch.equal(p, weights[name]) for name, p in tiny_backbone.model.named_parameters())
    loaded = load_red(tmp_path / RED_DIR, tiny_backbone)
    assert torch.equal(loaded.scale, module.intervention.scale) and torch.equal(loaded.bias, module.intervention.bias)
    assert not torch.equal(loaded.scale, torch.ones_like(loaded.scale))
    with loaded.applied(tiny_backbone.model):
        after = task.evaluate(tiny_backbone, split="val")["answer_logprob"]
    assert after > before + 0.1
    metrics = read_json(tmp_path / "metrics.json")
    assert metrics["trainable_parameters"] == 2 * 2 * 32
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert sorted(checkpoint["state_dict"]) == ["intervention.bias", "intervention.scale"]


def test_dpo_reference_ignores_the_edit(tiny_backbone, tmp_path):
    module = REDModule(tiny_backbone, "dpo", REDStepConfig(lr=1e-2), tmp_path)
    task = ToyDPOTask(n_train=8, n_val=4)
    fit(module, task, DATA, replace(CPU, max_epochs=1), ValidationConfig(), tmp_path)
    batch = PadCollator(tiny_backbone.tokenizer.pad_token_id)(tokenize_examples(tiny_backbone, task.examples("train")[:4]))
    with torch.no_grad():
        out = tiny_backbone.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    base = sequence_logps(out, batch["labels"])
    cached = torch.tensor([module.reference_logps["train"][i] for i in range(4)])
    torch.testing.assert_close(torch.cat([cached[:, 0], cached[:, 1]]), base)
    assert "train/rewards/margin" in read_json(tmp_path / "metrics.json")


def test_bad_inputs(tiny_backbone, tiny_backbone_factory, tmp_path):
    with pytest.raises(ValueError, match="positive"):
        REDIntervention(0, 32)
    red = REDIntervention(3, 32)
    with pytest.raises(ValueError, match="3 layers"):
        red.attach(tiny_backbone.model)
    save_red(REDIntervention(2, 32), tmp_path, tiny_backbone)
    other = tiny_backbone_factory("llama", hidden_size=64, intermediate_size=64)
    with pytest.raises(ValueError, match="2 layers × 32"):
        load_red(tmp_path, other)

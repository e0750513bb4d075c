"""LoRA via peft on tiny models, trained with LoFiT's losses and loop."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from synthetic import ToyDPOTask, ToySFTTask

from lofit.data.collate import PadCollator, tokenize_examples
from lofit.io import read_json
from lofit.losses import answer_logps, sequence_logps
from lofit.methods.lora import (
    LORA_DIR,
    LoRAAdapter,
    LoRAModule,
    LoRAStepConfig,
    load_lora,
    lora_parameter_count,
)
from lofit.methods.module import trainable_parameters
from lofit.errors import ConfigError
from lofit.training import DataConfig, TrainerConfig, ValidationConfig
from lofit.training.run import fit

CPU = TrainerConfig(accelerator="cpu", enable_progress_bar=False, log_every_n_steps=1, max_epochs=3)
DATA = DataConfig(batch_size=4)
IDS = torch.tensor([[5, 17, 300, 42, 9, 1200, 77, 3]])


def logits(model, ids=IDS):
    with torch.no_grad():
        return model(input_ids=ids).logits


def frozen_weights(backbone) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in backbone.model.named_parameters() if "lora_" not in name}


def test_parameter_count_formula(tiny_backbone):
    # tiny llama: hidden 32, 4 heads × 8 (q, o: 32 → 32), 2 kv heads × 8 (k, v: 32 → 16), 2 layers
    adapter = LoRAAdapter(tiny_backbone.model, r=4, target_modules=["q_proj", "v_proj", "o_proj"])
    per_layer = 4 * (32 + 32) + 4 * (32 + 16) + 4 * (32 + 32)
    assert adapter.num_trainable == 2 * per_layer
    assert lora_parameter_count(tiny_backbone.model, ["q_proj", "v_proj", "o_proj"], 4) == 2 * per_layer
    assert len(adapter.names) == 6
    big = LoRAAdapter(tiny_backbone.model, r=16, target_modules=["up_proj", "down_proj"])
    assert big.num_trainable == 2 * (16 * (32 + 64) + 16 * (64 + 32))


def test_construction_leaves_the_model_alone_and_zero_b_is_identity(tiny_backbone):
    base = logits(tiny_backbone.model)
    names = [name for name, _ in tiny_backbone.model.named_modules()]
    adapter = LoRAAdapter(tiny_backbone.model, r=4)
    assert [name for name, _ in tiny_backbone.model.named_modules()] == names
    assert not hasattr(tiny_backbone.model, "peft_config")
    with adapter.applied(tiny_backbone.model):
        assert torch.equal(logits(tiny_backbone.model), base)  # B = 0 at initialisation
        with torch.no_grad():
            for parts in adapter.parts:
                parts.lora_B["default"].weight.normal_()
        assert not torch.allclose(logits(tiny_backbone.model), base)
        with adapter.disabled():
            assert torch.equal(logits(tiny_backbone.model), base)
    assert torch.equal(logits(tiny_backbone.model), base)
    with pytest.raises(ValueError, match="only to the model it was built on"):
        adapter.attach(torch.nn.Linear(2, 2))


def test_sft_training_lowers_the_loss_and_trains_only_lora(tiny_backbone, tmp_path):
    task = ToySFTTask()
    before = task.evaluate(tiny_backbone, split="val")["answer_logprob"]
    weights = frozen_weights(tiny_backbone)
    config = LoRAStepConfig(r=4, lr=5e-3, lora_dropout=0.0)
    module = LoRAModule(tiny_backbone, "sft", config, tmp_path)
    assert trainable_parameters(tiny_backbone.model, module) == module.intervention.num_trainable
    fit(module, task, DATA, CPU, ValidationConfig(), tmp_path)
    assert not module.intervention.attached  # teardown detached it
    for name, value in frozen_weights(tiny_backbone).items():
        assert torch.equal(value, weights[name]), name
    assert all(parts.lora_B["default"].weight.abs().sum() > 0 for parts in module.intervention.parts)
    with module.intervention.applied(tiny_backbone.model):
        after = task.evaluate(tiny_backbone, split="val")["answer_logprob"]
    assert after > before + 0.1
    metrics = read_json(tmp_path / "metrics.json")
    assert metrics["trainable_parameters"] == module.intervention.num_trainable
    assert {"train/task_loss", "val/loss"} <= set(metrics)
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert all("lora_" in key for key in checkpoint["state_dict"])
    assert checkpoint["lofit"]["method"] == "lora"


def test_export_loads_in_peft_and_in_lofit(tiny_backbone, tiny_backbone_factory, tmp_path):
    from peft import PeftModel

    module = LoRAModule(tiny_backbone, "sft", LoRAStepConfig(r=2, target_modules=["q_proj", "down_proj"]))
    with torch.no_grad():
        for parts in module.intervention.parts:
            parts.lora_B["default"].weight.normal_(generator=torch.Generator().manual_seed(0))
    module.export(tmp_path)
    with module.intervention.applied(tiny_backbone.model):
        ours = logits(tiny_backbone.model)
    fresh = tiny_backbone_factory("llama")  # same seed: same base weights
    peft_model = PeftModel.from_pretrained(fresh.model, str(tmp_path / LORA_DIR))
    torch.testing.assert_close(logits(peft_model), ours)
    other = tiny_backbone_factory("llama")
    loaded = load_lora(tmp_path / LORA_DIR, other)
    with loaded.applied(other.model):
        torch.testing.assert_close(logits(other.model), ours)


def dpo_batch(backbone, n: int = 4) -> dict[str, torch.Tensor]:
    features = tokenize_examples(backbone, ToyDPOTask().examples("train")[:n])
    return PadCollator(backbone.tokenizer.pad_token_id)(features)


def test_dpo_reference_is_the_base_model_and_a_step_raises_the_margin(tiny_backbone):
    batch = dpo_batch(tiny_backbone)
    with torch.no_grad():
        out = tiny_backbone.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        base = sequence_logps(out, batch["labels"])
    module = LoRAModule(tiny_backbone, "dpo", LoRAStepConfig(r=4, lora_dropout=0.0))
    with torch.no_grad():
        for parts in module.intervention.parts:
            parts.lora_B["default"].weight.normal_(std=0.05, generator=torch.Generator().manual_seed(1))
    optimizer = torch.optim.AdamW(module.intervention.parameters(), lr=1e-2)
    with module.intervention.applied(tiny_backbone.model):
        chosen, rejected = module.reference(batch, "train")
        assert torch.equal(torch.cat([chosen, rejected]), base)
        assert not torch.allclose(answer_logps(module(batch)), base)
        loss, before = module.task_loss(batch, "train")
        loss.backward()
        assert all(p.grad is not None for p in module.intervention.parameters())
        optimizer.step()
        _, after = module.task_loss(batch, "train")
    assert after["rewards/margin"] > before["rewards/margin"]


def test_dpo_fit_runs_end_to_end(tiny_backbone, tmp_path):
    module = LoRAModule(tiny_backbone, "dpo", LoRAStepConfig(r=2, lr=1e-2), tmp_path)
    fit(module, ToyDPOTask(n_train=8, n_val=4), DATA, replace(CPU, max_epochs=1), ValidationConfig(), tmp_path)
    metrics = read_json(tmp_path / "metrics.json")
    assert {"train/rewards/margin", "val/rewards/accuracy"} <= set(metrics)
    assert len(module.reference_logps["train"]) == 8
    assert (tmp_path / LORA_DIR / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"r": 0}, "rank r"),
        ({"lora_alpha": -1.0}, "lora_alpha"),
        ({"lora_dropout": 1.0}, "lora_dropout"),
        ({"target_modules": []}, "target_modules"),
    ],
)
def test_bad_settings_raise_config_errors(settings, message):
    with pytest.raises(ConfigError, match=message):
        LoRAStepConfig(**settings)


def test_unknown_target_fails_with_one_line(tiny_backbone):
    with pytest.raises(ValueError, match="no_such_proj") as info:
        LoRAAdapter(tiny_backbone.model, target_modules=["no_such_proj"])
    assert "\n" not in str(info.value)


def test_checkpoint_of_another_lora_setup_is_refused(tiny_backbone):
    module = LoRAModule(tiny_backbone, "sft", LoRAStepConfig(r=4))
    checkpoint: dict = {}
    module.reference_logps["train"][0] = (-1.0, -2.0)
    module.on_save_checkpoint(checkpoint)
    same = LoRAModule(tiny_backbone, "sft", LoRAStepConfig(r=4))
    same.on_load_checkpoint(checkpoint)
    assert same.reference_logps["train"] == {0: (-1.0, -2.0)}
    with pytest.raises(ConfigError, match="another lora setup"):
        LoRAModule(tiny_backbone, "sft", LoRAStepConfig(r=8)).on_load_checkpoint(checkpoint)
    with pytest.raises(ConfigError, match="not written by a lofit lora"):
        same.on_load_checkpoint({"lofit": {"heads": []}})

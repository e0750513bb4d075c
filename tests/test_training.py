"""Both LoFiT steps on tiny models: head ranking, sparse tuning, DPO reference, resume, 4-bit, bad configs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import tiny_model
from safetensors.torch import load_file
from synthetic import LIVE_HEAD, ToyDPOTask, ToySFTTask, one_head_backbone, save_tiny

from lofit.adapter import load_adapter
from lofit.backbone import BackboneConfig, load_backbone, wrap_model
from lofit.data.collate import PadCollator, tokenize_examples
from lofit.intervention import HeadIntervention
from lofit.io import read_json
from lofit.losses import answer_logps, completion_cross_entropy, sequence_logps
from lofit.errors import ConfigError
from lofit.training import (
    BiasTuningModule,
    DataConfig,
    HeadSelectionModule,
    SelectionConfig,
    TaskSpec,
    TrainerConfig,
    TuningConfig,
    ValidationConfig,
)
from lofit.training.heads import HeadRanking, write_heads
from lofit.quantized import keep_4bit_differentiable
from lofit.training.run import build_task, fit

CPU = TrainerConfig(accelerator="cpu", enable_progress_bar=False, log_every_n_steps=1, max_epochs=3)
DATA = DataConfig(batch_size=4)


@pytest.fixture
def one_head(tokenizer):
    return one_head_backbone(tiny_model("llama", len(tokenizer)), tokenizer)


def select(backbone, out: Path, task=None, epochs: int = 3, **config) -> HeadSelectionModule:
    task = task or ToySFTTask()
    cfg = SelectionConfig(**{"lr": 5e-2, "l1_lambda": 5e-3, **config})
    module = HeadSelectionModule(backbone, task.loss, cfg, out, task_name=task.name)
    fit(module, task, DATA, replace(CPU, max_epochs=epochs), ValidationConfig(), out)
    return module


def heads_file(path: Path, backbone, first=LIVE_HEAD) -> Path:
    """A ranking with `first` on top, then every other head in decreasing score."""
    g = backbone.geometry
    scores = [[0.1 / (1 + layer * g.num_heads + head) for head in range(g.num_heads)] for layer in range(g.num_layers)]
    scores[first[0]][first[1]] = 1.0
    return write_heads(path, HeadRanking(backbone.name, g, scores))


def tune(backbone, out: Path, heads: Path, task=None, epochs: int = 3, callbacks=(), ckpt_path=None, **config):
    task = task or ToySFTTask()
    cfg = TuningConfig(**{"heads": str(heads), "top_k": 2, "lr": 5e-2, **config})
    module = BiasTuningModule(backbone, task.loss, cfg, out)
    fit(module, task, DATA, replace(CPU, max_epochs=epochs), ValidationConfig(), out, ckpt_path, callbacks)
    return module


# ---------------------------------------------------------------------------- step 1
def test_selection_ranks_the_only_useful_head_first(one_head, tmp_path):
    select(one_head, tmp_path)
    data = read_json(tmp_path / "heads.json")
    assert data["model"] == one_head.name and data["task"] == "toy-sft"
    assert data["geometry"] == {"num_layers": 2, "num_heads": 4, "head_dim": 8}
    assert len(data["scores"]) == 2 and all(len(row) == 4 for row in data["scores"])
    ranked = [(h["layer"], h["head"]) for h in data["heads"]]
    assert ranked[0] == LIVE_HEAD and len(ranked) == 8
    top, rest = data["heads"][0]["score"], [h["score"] for h in data["heads"][1:]]
    assert max(rest) < 0.1 * top
    assert (tmp_path / "heads.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = read_json(tmp_path / "metrics.json")
    assert {"train/task_loss", "train/l1_norm", "train/penalty", "val/loss"} <= set(metrics)
    assert (tmp_path / "logs" / "metrics.csv").is_file()


def test_l1_penalty_shrinks_the_scales(tiny_backbone_factory, tmp_path):
    free = select(tiny_backbone_factory("llama"), tmp_path / "free", epochs=2, l1_lambda=0.0)
    sparse = select(tiny_backbone_factory("llama"), tmp_path / "sparse", epochs=2, l1_lambda=1.0)
    assert sparse.intervention.scale.abs().sum() < 0.5 * free.intervention.scale.abs().sum()


def saved_scale(path: Path) -> torch.Tensor:
    return torch.load(path, weights_only=False)["state_dict"]["intervention.scale"]


def test_task_metric_on_val_can_pick_the_best_epoch(one_head, tmp_path):
    task = ToySFTTask(n_val=4)
    # the answer log-prob rises every epoch, so "min" picks epoch 0: the product must not be the last weights
    config = SelectionConfig(lr=5e-2, keep="best", monitor="val/task/answer_logprob", monitor_mode="min")
    module = HeadSelectionModule(one_head, "sft", config, tmp_path)
    fit(module, task, DATA, replace(CPU, max_epochs=2), ValidationConfig(task_metric=True, limit=4), tmp_path)
    metrics = read_json(tmp_path / "metrics.json")
    assert "val/task/answer_logprob" in metrics
    best = next((tmp_path / "checkpoints").glob("best-*.ckpt"))
    assert best.name == "best-epoch=0.ckpt"
    last_scale = saved_scale(tmp_path / "checkpoints" / "last.ckpt")
    best_scale = saved_scale(best)
    assert torch.equal(module.intervention.scale.detach(), best_scale) and not torch.equal(best_scale, last_scale)
    expected = HeadRanking.from_scale(best_scale, one_head.name, one_head.geometry)
    assert read_json(tmp_path / "heads.json")["scores"] == expected.scores


# ---------------------------------------------------------------------------- step 2
def test_tuning_trains_only_the_chosen_heads_and_lowers_the_loss(one_head, tmp_path):
    task = ToySFTTask()
    before = task.evaluate(one_head, split="val")["answer_logprob"]
    module = tune(one_head, tmp_path, heads_file(tmp_path / "heads.json", one_head))
    offset = module.intervention.offset.detach()
    chosen = [LIVE_HEAD, (0, 0)]  # (0, 0) has the next-highest score in `heads_file`
    assert module.intervention.heads == chosen
    for layer in range(2):
        for head in range(4):
            assert (offset[layer, head].abs().sum() > 0) == ((layer, head) in chosen)
    adapter = load_adapter(tmp_path / "adapter", one_head)
    assert adapter.heads == chosen and torch.equal(adapter.offset, offset)
    with adapter.applied(one_head.model):
        after = task.evaluate(one_head, split="val")["answer_logprob"]
    assert after > before + 0.1  # the tiny model's logits span < 1 nat: 0.1 is far above noise
    assert read_json(tmp_path / "adapter" / "adapter_config.json")["head_scores"][0] == 1.0


def test_checkpoint_holds_only_the_intervention(one_head, tmp_path):
    tune(one_head, tmp_path, heads_file(tmp_path / "heads.json", one_head), task=ToyDPOTask(), epochs=1)
    path = tmp_path / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(path, weights_only=False)
    assert list(checkpoint["state_dict"]) == ["intervention.offset"]
    assert len(checkpoint["lofit"]["reference_logps"]["train"]) == 16
    assert path.stat().st_size < 64_000


# ---------------------------------------------------------------------------- DPO
def dpo_batch(backbone, n: int = 4) -> dict[str, torch.Tensor]:
    features = tokenize_examples(backbone, ToyDPOTask().examples("train")[:n])
    return PadCollator(backbone.tokenizer.pad_token_id)(features)


def test_reference_logps_are_the_base_models(tiny_backbone, tmp_path):
    batch = dpo_batch(tiny_backbone)
    with torch.no_grad():
        logits = tiny_backbone.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        base = sequence_logps(logits, batch["labels"])
    module = HeadSelectionModule(tiny_backbone, "dpo", SelectionConfig(init_std=0.5))
    with module.intervention.applied(tiny_backbone.model):
        chosen, rejected = module.reference(batch, "train")
        policy = answer_logps(module(batch))
    assert torch.equal(torch.cat([chosen, rejected]), base)
    assert not torch.allclose(policy, base)  # the intervention does change the model
    assert sorted(module.reference_logps["train"]) == [0, 1, 2, 3]


def test_a_dpo_step_raises_the_margin(tiny_backbone):
    module = HeadSelectionModule(tiny_backbone, "dpo", SelectionConfig())
    batch = dpo_batch(tiny_backbone)
    optimizer = torch.optim.AdamW(module.intervention.parameters(), lr=1e-2)
    with module.intervention.applied(tiny_backbone.model):
        loss, before = module.task_loss(batch, "train")
        loss.backward()
        optimizer.step()
        _, after = module.task_loss(batch, "train")
    assert after["rewards/margin"] > before["rewards/margin"]


# ---------------------------------------------------------------------------- resume
class Crash(L.Callback):
    """Simulates a run killed right after its first epoch (and its checkpoint)."""

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            raise RuntimeError("simulated crash")


class CountSteps(L.Callback):
    def __init__(self) -> None:
        self.steps = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps += 1


def test_resumed_run_ends_with_the_same_adapter(tokenizer, tmp_path):
    def backbone():
        return wrap_model(tiny_model("llama", len(tokenizer)), tokenizer, name="tiny-llama")

    heads = heads_file(tmp_path / "heads.json", backbone())
    task = ToyDPOTask()
    L.seed_everything(0)
    tune(backbone(), tmp_path / "straight", heads, task=task, epochs=2)
    L.seed_everything(1)  # a restart does not share the crashed process's RNG state
    with pytest.raises(RuntimeError, match="simulated crash"):
        tune(backbone(), tmp_path / "resumed", heads, task=task, epochs=2, callbacks=[Crash()])
    assert not (tmp_path / "resumed" / "adapter").exists()
    L.seed_everything(2)
    counter = CountSteps()
    last = tmp_path / "resumed" / "checkpoints" / "last.ckpt"
    tune(backbone(), tmp_path / "resumed", heads, task=task, epochs=2, callbacks=[counter], ckpt_path=str(last))
    assert counter.steps == 4  # only the second epoch ran
    straight = load_file(tmp_path / "straight" / "adapter" / "adapter.safetensors")
    resumed = load_file(tmp_path / "resumed" / "adapter" / "adapter.safetensors")
    assert torch.equal(straight["offset"], resumed["offset"])
    assert read_json(tmp_path / "resumed" / "metrics.json")["global_step"] == 8


# ---------------------------------------------------------------------------- 4-bit
@pytest.fixture
def tiny_4bit_dir(tokenizer, tmp_path) -> Path:
    # bitsandbytes' CPU 4-bit kernel packs weights in blocks of 32 output rows: every projection needs >= 32
    model = tiny_model("llama", len(tokenizer), hidden_size=64, intermediate_size=128, num_key_value_heads=4)
    return save_tiny(model, tokenizer, tmp_path / "tiny")


def offset_grad(backbone, no_grad_pass_first: bool) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    intervention = HeadIntervention(backbone.geometry, ("offset",), init_std=1e-3, generator=generator)
    features = tokenize_examples(backbone, ToySFTTask().examples("train")[:4])
    batch = PadCollator(backbone.tokenizer.pad_token_id)(features)
    with intervention.applied(backbone.model):
        if no_grad_pass_first:
            with torch.no_grad():  # bitsandbytes may repack the weights for inference here
                backbone.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            keep_4bit_differentiable(backbone.model)
        logits = backbone.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        completion_cross_entropy(logits, batch["labels"]).backward()
    assert intervention.offset.grad is not None
    return intervention.offset.grad.flatten()


def test_4bit_gradients_survive_a_no_grad_pass(tiny_4bit_dir):
    config = BackboneConfig(model=str(tiny_4bit_dir), quantization="nf4", dtype="float32")
    fresh = offset_grad(load_backbone(config), no_grad_pass_first=False)
    after = offset_grad(load_backbone(config), no_grad_pass_first=True)
    assert torch.nn.functional.cosine_similarity(fresh, after, dim=0) > 0.99


def test_both_steps_on_a_4bit_backbone_and_adapter_on_fp32(tiny_4bit_dir, tmp_path):
    quantized = load_backbone(BackboneConfig(model=str(tiny_4bit_dir), quantization="nf4", dtype="float32"))
    assert "4bit" in type(quantized.model.model.layers[0].self_attn.o_proj).__name__.lower()
    scales = select(quantized, tmp_path / "select", epochs=1).intervention.scale.detach()
    assert scales.abs().max() > 1e-2  # trained: far beyond the N(0, 1e-3) initialisation
    offsets = tune(quantized, tmp_path / "tune", tmp_path / "select" / "heads.json", epochs=1).intervention.offset
    assert offsets.detach().abs().max() > 1e-2
    full = load_backbone(BackboneConfig(model=str(tiny_4bit_dir)))
    adapter = load_adapter(tmp_path / "tune" / "adapter", full)
    assert torch.equal(adapter.offset, offsets.detach())
    task = ToySFTTask()
    base = task.evaluate(full, split="val")["answer_logprob"]
    with adapter.applied(full.model):
        assert task.evaluate(full, split="val")["answer_logprob"] > base


# ---------------------------------------------------------------------------- bad configs
def test_top_k_above_the_head_count_fails_before_training(tiny_backbone, tmp_path):
    with pytest.raises(ConfigError, match="top_k=9 but the model has 8 heads"):
        heads = heads_file(tmp_path / "h.json", tiny_backbone)
        BiasTuningModule(tiny_backbone, "sft", TuningConfig(heads=str(heads), top_k=9))


def test_heads_of_another_model_fail_before_training(tiny_backbone, tiny_backbone_factory, tmp_path):
    heads = heads_file(tmp_path / "h.json", tiny_backbone)
    with pytest.raises(ConfigError, match=r"ranks heads of 'tiny-llama' \(2 layers × 4 heads × 8\).*2 × 4 × 16"):
        BiasTuningModule(tiny_backbone_factory("gemma3_text"), "sft", TuningConfig(heads=str(heads)))


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: SelectionConfig(l1_lambda=-1e-3), "l1_lambda must be >= 0"),
        (lambda: TuningConfig(heads="h.json", top_k=0), "top_k must be positive"),
        (lambda: TuningConfig(heads="h.json", top_k=1.5), "fractional top_k"),
        (lambda: DataConfig(max_prompt_length=600), "max_prompt_length"),
        (lambda: build_task(TaskSpec(name="no-such-task")), "unknown task 'no-such-task'"),
        (lambda: build_task(TaskSpec(name="synthetic:Nope")), "cannot import task class"),
    ],
)
def test_bad_settings_raise_config_errors(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_evaluation_only_task_cannot_train(tiny_backbone):
    with pytest.raises(ConfigError, match="must use 'sft' or 'dpo'"):
        HeadSelectionModule(tiny_backbone, None)

"""Issue 11 on the training side: nothing unpickled on resume, history kept, NaN refused, a quiet
run, the summary's count, the head-ranking rule pinned, and every Trainer argument accepted."""

from __future__ import annotations

import csv
import inspect
import io
import json
import logging
import os
import pty
import sys
import warnings
from dataclasses import fields, replace
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import ROOT, tiny_model
from synthetic import ToySFTTask, one_head_backbone, save_tiny

from lofit.backbone import BackboneConfig, load_backbone
from lofit.cli import main
from lofit.io import read_json
from lofit.quantized import is_quantized
from lofit.errors import ConfigError
from lofit.training import (
    BiasTuningModule,
    DataConfig,
    HeadSelectionModule,
    SelectionConfig,
    TrainerConfig,
    TuningConfig,
    ValidationConfig,
)
from lofit.training.callbacks import EpochSummaryLines
from lofit.training.config import TRAINER_ARGS_SET_BY_LOFIT
from lofit.training.heads import HeadRanking, write_heads
from lofit.training.run import build_trainer, check_resume, check_trainer, fit

CPU = TrainerConfig(accelerator="cpu", enable_progress_bar=False, log_every_n_steps=1, max_epochs=2)
DATA = DataConfig(batch_size=4)
# the answer log-prob rises every epoch on the one-head model, so "min" makes epoch 0 the best
BEST_IS_FIRST = dict(lr=5e-2, keep="best", monitor="val/task/answer_logprob", monitor_mode="min")


class CodeOnLoad:
    """Unpickling this object runs code: it creates the file `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


class Crash(L.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            raise RuntimeError("simulated crash")


@pytest.fixture
def one_head(tokenizer):
    return one_head_backbone(tiny_model("llama", len(tokenizer)), tokenizer)


def random_ranking(backbone) -> HeadRanking:
    return HeadRanking.from_scale(torch.rand(2, 4, 8), backbone.name, backbone.geometry)


def select_best_first(backbone, out: Path, ckpt_path=None, callbacks=()) -> HeadSelectionModule:
    module = HeadSelectionModule(backbone, "sft", SelectionConfig(**BEST_IS_FIRST), out)
    validation = ValidationConfig(task_metric=True, limit=4)
    fit(module, ToySFTTask(n_val=4), DATA, CPU, validation, out, ckpt_path, callbacks)
    return module


# ---------------------------------------------------------------------------- item 1: no unpickling
def test_keep_best_after_resume_never_opens_a_path_from_the_checkpoint(tokenizer, tmp_path):
    def backbone():
        return one_head_backbone(tiny_model("llama", len(tokenizer)), tokenizer)

    out, marker = tmp_path / "run", tmp_path / "code-ran"
    with pytest.raises(RuntimeError, match="simulated crash"):
        select_best_first(backbone(), out, callbacks=[Crash()])
    best_epoch = torch.load(out / "checkpoints" / "best-epoch=0.ckpt", weights_only=True)["state_dict"]
    # the crafted last.ckpt is plain data (it passes weights_only) but names a pickle as the best model
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": CodeOnLoad(marker)}, evil)
    last = out / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    for key, state in checkpoint["callbacks"].items():
        if "'monitor': 'val/task/answer_logprob'" in key:
            state["best_model_path"] = str(evil)
    torch.save(checkpoint, last)

    module = select_best_first(backbone(), out, ckpt_path=str(last))
    assert not marker.exists()
    assert torch.equal(module.intervention.scale.detach(), best_epoch["intervention.scale"])
    expected = HeadRanking.from_scale(best_epoch["intervention.scale"], module.backbone.name, module.backbone.geometry)
    assert read_json(out / "heads.json")["scores"] == expected.scores


def test_a_checkpoint_holding_code_is_refused_in_one_line(one_head, tmp_path):
    marker = tmp_path / "code-ran"
    select_best_first(one_head, tmp_path / "run")
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["lofit"]["payload"] = CodeOnLoad(marker)
    crafted = tmp_path / "crafted.ckpt"
    torch.save(checkpoint, crafted)
    with pytest.raises(ConfigError, match=r"crafted.ckpt: refused to load.*GLOBAL") as refused:
        check_resume(str(crafted))
    assert "\n" not in str(refused.value)
    out = tmp_path / "resumed"
    with pytest.raises(ConfigError, match="refused to load"):  # fit itself refuses it too
        select_best_first(one_head, out, ckpt_path=str(crafted))
    assert not marker.exists() and not (out / "heads.json").exists()


def test_what_lofit_puts_in_a_checkpoint_loads_with_weights_only(one_head, tmp_path):
    heads = write_heads(tmp_path / "heads.json", random_ranking(one_head))
    config = TuningConfig(heads=str(heads), top_k=0.25, keep="best", lr=5e-2)
    module = BiasTuningModule(one_head, "sft", config, tmp_path)
    fit(module, ToySFTTask(), DATA, replace(CPU, max_epochs=1), ValidationConfig(), tmp_path)
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["top_k"] == 0.25 and "lofit" in checkpoint


# ---------------------------------------------------------------------------- item 3: history kept
class LogExtra(L.Callback):
    """Logs a metric that the first run never logged: a new CSV column on resume."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        pl_module.log("extra/after_resume", 1.0)


def csv_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def test_resume_appends_to_metrics_csv(one_head, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match="simulated crash"):
            select_best_first(one_head, tmp_path, callbacks=[Crash()])
        header, rows = csv_rows(tmp_path / "logs" / "metrics.csv")
        assert {row["epoch"] for row in rows} == {"0"}
        last = str(tmp_path / "checkpoints" / "last.ckpt")
        select_best_first(one_head, tmp_path, ckpt_path=last, callbacks=[LogExtra()])
    assert not [w for w in caught if "Previous log files" in str(w.message)]
    header, rows = csv_rows(tmp_path / "logs" / "metrics.csv")
    assert {row["epoch"] for row in rows} == {"0", "1"}
    assert [int(row["step"]) for row in rows] == sorted(int(row["step"]) for row in rows)
    assert "extra/after_resume" in header and header == sorted(header)
    assert {row["extra/after_resume"] for row in rows if row["epoch"] == "0"} == {""}
    assert sum(bool(row["val/loss"]) for row in rows) == 2  # one validation row per epoch


def test_a_new_run_replaces_the_old_log(one_head, tmp_path):
    select_best_first(one_head, tmp_path)
    select_best_first(one_head, tmp_path)
    _, rows = csv_rows(tmp_path / "logs" / "metrics.csv")
    assert sum(bool(row["val/loss"]) for row in rows) == 2


# ---------------------------------------------------------------------------- item 4: nonsense refused
class PoisonScales(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 1:
            with torch.no_grad():
                pl_module.intervention.scale.fill_(float("nan"))


def test_a_non_finite_loss_stops_the_run_and_exports_nothing(one_head, tmp_path):
    module = HeadSelectionModule(one_head, "sft", SelectionConfig(), tmp_path)
    with pytest.raises(ConfigError, match=r"training loss is not finite .* at epoch 0, step 1 \(batch 1\)") as stop:
        fit(module, ToySFTTask(), DATA, CPU, ValidationConfig(), tmp_path, callbacks=[PoisonScales()])
    assert "\n" not in str(stop.value)
    assert not (tmp_path / "heads.json").exists()


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: ValidationConfig(limit=0), "validation.limit must be positive"),
        (lambda: ValidationConfig(limit=-3), "validation.limit must be positive"),
        (lambda: ValidationConfig(batch_size=0), "validation.batch_size must be positive"),
        (lambda: SelectionConfig(lr=float("nan")), "lr must be positive and finite"),
        (lambda: SelectionConfig(init_std=float("inf")), "init_std must be >= 0 and finite"),
        (lambda: TrainerConfig(max_epochs=0), "max_epochs must be positive"),
        (lambda: TrainerConfig(callbacks=[{"init_args": {}}]), "trainer.callbacks: .* needs a 'class_path'"),
    ],
)
def test_nonsense_settings_are_refused(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


# ---------------------------------------------------------------------------- item 6: a quiet run
NOISE = ("GPU available", "TPU available", "HPU available", "litlogger", "💡", "LeafSpec", "Previous log files")


def test_a_training_run_is_quiet_and_counts_what_moves(one_head, tmp_path, capfd):
    heads = write_heads(tmp_path / "heads.json", random_ranking(one_head))
    module = BiasTuningModule(one_head, "sft", TuningConfig(heads=str(heads), top_k=2), tmp_path)
    assert module.intervention.offset.numel() == 64 and module.intervention.num_trainable == 16
    trainer = TrainerConfig(accelerator="cpu", max_epochs=2)  # progress bar and summary on (the defaults)
    lightning_log = io.StringIO()  # Lightning logs through its own handler, bound to the stderr of import time
    handler = logging.StreamHandler(lightning_log)
    logging.getLogger("lightning.pytorch").addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit(module, ToySFTTask(), DATA, trainer, ValidationConfig(), tmp_path)
            fit(module, ToySFTTask(), DATA, trainer, ValidationConfig(), tmp_path)  # into a non-empty folder
    finally:
        logging.getLogger("lightning.pytorch").removeHandler(handler)
    captured = capfd.readouterr()
    logged = lightning_log.getvalue()
    text = "\n".join([captured.out, captured.err, logged, *(str(w.message) for w in caught)])
    assert [noise for noise in NOISE if noise in text] == []
    row = next(line for line in logged.splitlines() if "| intervention |" in line)
    assert row.split("|")[3].strip() == "16" and "16        Trainable params" in logged
    epochs = [line for line in captured.err.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 4 and epochs[1].startswith("epoch 2/2: train/loss ") and ", val/loss " in epochs[1]


def test_a_terminal_gets_lightnings_progress_bar(tmp_path, monkeypatch):
    leader, follower = pty.openpty()
    with os.fdopen(follower, "w") as terminal, monkeypatch.context() as patch:
        patch.setattr(sys, "stderr", terminal)
        on_terminal = build_trainer(TrainerConfig(accelerator="cpu"), tmp_path, SelectionConfig())
    os.close(leader)
    assert not isinstance(on_terminal.progress_bar_callback, EpochSummaryLines)
    logged = build_trainer(TrainerConfig(accelerator="cpu"), tmp_path, SelectionConfig())
    assert isinstance(logged.progress_bar_callback, EpochSummaryLines)
    quiet = build_trainer(TrainerConfig(accelerator="cpu", enable_progress_bar=False), tmp_path, SelectionConfig())
    assert quiet.progress_bar_callback is None


# ---------------------------------------------------------------------------- item 6b: the ranking rule
def test_heads_are_ranked_by_the_l2_norm_of_their_scale(tiny_backbone, tmp_path):
    # head (0, 1): L2 2.00, max 1.0, L1 4.0    head (1, 0): L2 2.50, max 2.5, L1 2.5
    # head (1, 3): L2 2.60, max 1.5, L1 4.5    by max |A|: (1,0) (1,3) (0,1); by L1: (1,3) (0,1) (1,0)
    module = HeadSelectionModule(tiny_backbone, "sft", SelectionConfig(init_std=0.0), tmp_path)
    with torch.no_grad():
        scale = module.intervention.scale
        scale[0, 1, :4] = torch.tensor([1.0, 1.0, 1.0, 1.0])
        scale[1, 0, :1] = torch.tensor([2.5])
        scale[1, 3, :3] = torch.tensor([1.5, 1.5, 1.5])
    module.export(tmp_path)
    ranked = read_json(tmp_path / "heads.json")["heads"]
    assert [(h["layer"], h["head"]) for h in ranked[:3]] == [(1, 3), (1, 0), (0, 1)]
    assert [h["score"] for h in ranked[:3]] == pytest.approx([6.75**0.5, 2.5, 2.0])
    assert [h["score"] for h in ranked[3:]] == [0.0] * 5


# ---------------------------------------------------------------------------- item 7: Trainer arguments
def test_trainer_config_covers_every_trainer_argument():
    lightning_args = set(inspect.signature(L.Trainer.__init__).parameters) - {"self"}
    ours = {f.name for f in fields(TrainerConfig)}
    assert ours | set(TRAINER_ARGS_SET_BY_LOFIT) == lightning_args
    assert not ours & set(TRAINER_ARGS_SET_BY_LOFIT)


def test_trainer_flags_pass_through_unchanged(tmp_path):
    cfg = TrainerConfig(
        accelerator="cpu", devices=1, num_nodes=1, max_steps=3, val_check_interval=0.5, num_sanity_val_steps=0,
        inference_mode=False, reload_dataloaders_every_n_epochs=2, gradient_clip_algorithm="value",
        strategy={"class_path": "lightning.pytorch.strategies.SingleDeviceStrategy", "init_args": {"device": "cpu"}},
    )  # fmt: skip
    trainer = build_trainer(cfg, tmp_path, SelectionConfig())
    assert (trainer.max_steps, trainer.val_check_interval, trainer.num_sanity_val_steps) == (3, 0.5, 0)
    assert trainer.reload_dataloaders_every_n_epochs == 2 and not trainer.predict_loop.inference_mode
    assert type(trainer.strategy).__name__ == "SingleDeviceStrategy"
    assert trainer.gradient_clip_algorithm == "value"


@pytest.mark.parametrize(
    "settings,message",
    [
        (dict(logger={"class_path": "no_such.Logger"}), "trainer.logger: cannot import 'no_such.Logger'"),
        (dict(callbacks=["NoSuchCallback"]), "trainer.callbacks: 'NoSuchCallback' is not a Callback class"),
        (dict(callbacks=["lightning.pytorch.loggers.CSVLogger"]), "is not a Callback class"),
        (dict(callbacks=[{"class_path": "EarlyStopping", "init_args": {"bad": 1}}]), "cannot create 'EarlyStopping'"),
        (dict(barebones=True), "trainer: .*barebones"),
    ],
)  # fmt: skip
def test_bad_trainer_objects_are_one_line_config_errors(settings, message, tmp_path):
    with pytest.raises(ConfigError, match=message) as refused:
        build_trainer(TrainerConfig(**settings), tmp_path, SelectionConfig())
    assert "\n" not in str(refused.value)
    if "cannot create" not in message and "barebones" not in message:  # found before any model loads
        with pytest.raises(ConfigError, match=message):
            check_trainer(TrainerConfig(**settings))


def test_a_shipped_config_runs_with_an_extra_logger_and_callback(tokenizer, shared_data, tmp_path, capsys):
    model = save_tiny(tiny_model("llama", len(tokenizer)), tokenizer, tmp_path / "model")
    extra_logs, out = tmp_path / "extra-logs", tmp_path / "run"
    logger = {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(extra_logs)}}
    monitor = {"class_path": "LearningRateMonitor", "init_args": {"logging_interval": "step"}}
    main([
        "select", "--config", str(ROOT / "configs" / "mquake-select.yaml"),
        "--backbone.model", str(model), "--task.data_dir", str(shared_data),
        "--data.train_limit", "8", "--data.val_limit", "4", "--data.batch_size", "4",
        "--trainer.max_epochs", "1", "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.logger", json.dumps(logger), "--trainer.callbacks", json.dumps([monitor]),
        "--output_dir", str(out),
    ])  # fmt: skip
    assert json.loads(capsys.readouterr().out)["epochs"] == 1
    header, rows = csv_rows(out / "logs" / "metrics.csv")  # lofit's own log is still there
    assert "lr-AdamW" in header and "0.005" in {row["lr-AdamW"] for row in rows}
    extra_header, _ = csv_rows(extra_logs / "lightning_logs" / "version_0" / "metrics.csv")
    assert "lr-AdamW" in extra_header and "val/loss" in extra_header
    assert (out / "heads.json").is_file() and (out / "checkpoints" / "last.ckpt").is_file()


# ---------------------------------------------------------------------------- item 10: one answer
def test_is_quantized_answers_for_models_and_layers(tokenizer, tmp_path):
    model = tiny_model("llama", len(tokenizer), hidden_size=64, intermediate_size=128, num_key_value_heads=4)
    folder = save_tiny(model, tokenizer, tmp_path / "tiny")
    full = load_backbone(BackboneConfig(model=str(folder)))
    nf4 = load_backbone(BackboneConfig(model=str(folder), quantization="nf4", dtype="float32"))
    assert not is_quantized(full.model) and not is_quantized(full.model.model.layers[0].self_attn.o_proj)
    assert is_quantized(nf4.model) and is_quantized(nf4.model.model.layers[0].self_attn.o_proj)
    assert is_quantized(nf4.model.model.layers[0]) and not is_quantized(nf4.model.model.norm)


def test_tune_reads_its_heads_file_once_and_trains_the_chosen_heads(tokenizer, tmp_path, monkeypatch, capsys):
    """K is resolved once: `lofit tune` reads the heads file a single time, before the backbone loads."""
    folder = save_tiny(tiny_model("llama", len(tokenizer)), tokenizer, tmp_path / "model")
    backbone = load_backbone(BackboneConfig(model=str(folder)))
    scores = torch.zeros(2, 4)
    scores[1, 3], scores[0, 2], scores[1, 0] = 3.0, 2.0, 1.0
    heads = write_heads(tmp_path / "heads.json", HeadRanking(str(folder), backbone.geometry, scores.tolist()))
    reads: list[Path] = []
    read_text = Path.read_text

    def counting_read_text(path, *args, **kwargs):
        if path.name == heads.name:
            reads.append(path)
        return read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counting_read_text)
    main([
        "tune", "--task.name", "synthetic:ToySFTTask", "--tuning.heads", str(heads), "--tuning.top_k", "2",
        "--backbone.model", str(folder), "--data.batch_size", "4", "--trainer.max_epochs", "1",
        "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false", "--output_dir", str(tmp_path / "run"),
    ])  # fmt: skip
    assert reads == [heads]
    monkeypatch.undo()
    config = read_json(tmp_path / "run" / "adapter" / "adapter_config.json")
    assert [tuple(head) for head in config["heads"]] == [(1, 3), (0, 2)]
    assert config["extra"]["top_k"] == 2

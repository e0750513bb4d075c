"""Every shipped config parses and instantiates, and the CLI reports bad input in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from jsonargparse import capture_parser

from lofit.backbone import BackboneConfig
from lofit.cli import SUBCOMMANDS, main
from lofit.methods.lora import LoRAStepConfig
from lofit.methods.red import REDStepConfig
from lofit.methods.reft import ReFTStepConfig
from lofit.tasks.base import Task
from lofit.training import DataConfig, SelectionConfig, TrainerConfig, TuningConfig
from lofit.training.run import build_task, build_trainer

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
STEP_CONFIG = {
    "select": ("selection", SelectionConfig),
    "tune": ("tuning", TuningConfig),
    "lora": ("lora", LoRAStepConfig),
    "red": ("red", REDStepConfig),
    "reft": ("reft", ReFTStepConfig),
}
GRID_COMMANDS = {"iti": "top_k", "repe": "top_layers"}  # training-free: a validation grid, no Trainer


def parser():
    from jsonargparse import auto_cli

    return capture_parser(lambda: auto_cli(SUBCOMMANDS, args=[]))


def subcommand_of(path: Path) -> str:
    return path.stem.rsplit("-", 1)[-1]


def test_configs_cover_every_task_and_step():
    names = {path.stem for path in CONFIGS}
    for task in ("truthfulqa", "mquake", "clutrr"):
        assert {f"{task}-select", f"{task}-tune"} <= names
    assert {"truthfulqa-iti", "truthfulqa-repe", "mquake-lora", "mquake-red", "mquake-reft"} <= names
    assert {"files-select", "files-tune", "files-evaluate"} <= names  # the "Your own data" guide
    assert any("nf4" in name and "ddp" in name for name in names)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_parses_and_instantiates(path, tmp_path):
    command = subcommand_of(path)
    assert command in {*STEP_CONFIG, *GRID_COMMANDS, "evaluate"}, f"{path.name}: name must end in a subcommand"
    cli = parser()
    config = cli.instantiate_classes(cli.parse_args([command, "--config", str(path)]))[command]
    if command == "evaluate":
        assert isinstance(config["backbone"], BackboneConfig) and isinstance(build_task(config["task"]), Task)
        return
    if command in GRID_COMMANDS:
        assert len(config[GRID_COMMANDS[command]]) >= 1 and len(config["alpha"]) >= 1
        assert isinstance(config["backbone"], BackboneConfig) and isinstance(build_task(config["task"]), Task)
        return
    group, cls = STEP_CONFIG[command]
    assert isinstance(config[group], cls)
    assert isinstance(config["backbone"], BackboneConfig) and isinstance(config["data"], DataConfig)
    assert isinstance(config["trainer"], TrainerConfig)
    assert isinstance(build_task(config["task"]), Task)
    if config["trainer"].accelerator != "gpu":
        trainer = build_trainer(config["trainer"], tmp_path, config[group])
        assert trainer.max_epochs == config["trainer"].max_epochs


def test_gpu_example_uses_4bit_bf16_and_ddp():
    path = next(p for p in CONFIGS if "nf4" in p.stem and p.stem.endswith("select"))
    cli = parser()
    config = cli.parse_args(["select", "--config", str(path)]).select
    assert config.backbone.quantization == "nf4"
    assert config.trainer.precision == "bf16-mixed" and config.trainer.strategy == "ddp"


def test_cli_overrides_reach_nested_settings():
    cli = parser()
    path = next(p for p in CONFIGS if p.stem == "mquake-select")
    args = cli.parse_args(["select", "--config", str(path), "--trainer.devices", "2", "--selection.l1_lambda", "0.01"])
    assert args.select.trainer.devices == 2 and args.select.selection.l1_lambda == 0.01


@pytest.mark.parametrize(
    "argv,message",
    [
        (["select", "--task.name", "no-such-task"], "unknown task 'no-such-task'"),
        (["select", "--task.name", "mquake", "--selection.l1_lambda", "-1"], "l1_lambda must be >= 0"),
        (["tune", "--task.name", "mquake", "--tuning.heads", "no.json"], "heads file no.json: file not found"),
        (["select", "--task.name", "mquake", "--ckpt_path", "nope.ckpt"], "ckpt_path nope.ckpt: file not found"),
        (["iti", "--task.name", "mquake"], "task 'mquake' has no true/false answers"),
        (["repe", "--task.name", "truthfulqa", "--alpha", "[]"], "grid's 'alpha' must be a non-empty list"),
        (["lora", "--task.name", "mquake", "--lora.r", "0"], "LoRA rank r must be a positive integer"),
        (["red", "--task.name", "mquake", "--red.lr", "0"], "lr must be positive"),
        (["reft", "--task.name", "mquake", "--reft.rank", "0"], "ReFT rank must be a positive integer"),
        (["reft", "--task.name", "mquake", "--reft.first", "0", "--reft.last", "0"], "ReFT needs first > 0 or last > 0"),
        (["reft", "--task.name", "mquake", "--reft.layers", "[1, 1]"], "ReFT layers repeat an index"),
        (["evaluate", "--task.name", "mquake", "--adapter", "."], "not an edit folder"),
    ],
)
def test_cli_rejects_bad_input_before_training(argv, message, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--output_dir", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lofit: error: ") and message in err and "\n" not in err
    assert not out.exists()

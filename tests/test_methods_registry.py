"""The method registry is the one table that loading, the pipelines and the training subcommands read."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lofit import adapter
from lofit.cli import SUBCOMMANDS
from lofit.methods.registry import EDIT_FORMATS, METHODS, TRAINING_STEPS, import_attribute
from lofit.training import tuning

ROOT = Path(__file__).resolve().parents[1]


def test_registry_and_training_body_import_without_torch():
    code = "import sys, lofit.methods.registry, lofit.methods.train, lofit.methods.loading; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("name", list(METHODS))
def test_every_entry_names_real_code_and_a_real_subcommand(name):
    method = METHODS[name]
    assert method.command in SUBCOMMANDS
    for path in (method.edit.save, method.edit.load, *(step.module for step in method.steps)):
        assert callable(import_attribute(path)), path
    for step in method.steps:
        assert step.command in SUBCOMMANDS


def test_training_subcommands_are_the_registered_steps():
    assert set(TRAINING_STEPS) == {"select", "tune", "lora", "red", "reft"}
    assert TRAINING_STEPS["tune"].reads_heads and TRAINING_STEPS["select"].records_task


def test_lofit_adapter_entry_is_the_adapter_format():
    lofit = METHODS["lofit"]
    assert (lofit.edit.config_file, lofit.edit.weights_file) == (adapter.CONFIG_NAME, adapter.WEIGHTS_NAME)
    assert lofit.edit_dir == tuning.ADAPTER_DIR


def test_pipelines_folder_table_is_the_registry(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "pipelines"))
    import common

    assert common.EDIT_FOLDERS == {"lofit": "adapter", "iti": "adapter", "repe": "steering", "lora": "lora", "red": "red", "reft": "reft"}
    assert set(EDIT_FORMATS) == {"lofit", "lora", "red", "reft", "repe"}

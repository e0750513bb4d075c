"""DDP on CPU: two gloo processes launched by the `lofit` CLI produce the same artifacts as one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_model
from synthetic import save_tiny

from lofit.adapter import load_adapter
from lofit.backbone import BackboneConfig, load_backbone
from lofit.cli import main
from lofit.io import read_json

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


@pytest.fixture(scope="module")
def model_dir(tokenizer, tmp_path_factory) -> Path:
    return save_tiny(tiny_model("llama", len(tokenizer)), tokenizer, tmp_path_factory.mktemp("tiny") / "model")


def lofit(*args: str, devices: int, cwd: Path) -> None:
    """Run the CLI in a fresh interpreter (Lightning's DDP launcher re-executes this command)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO)]), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "lofit.cli", *args,
        "--trainer.accelerator", "cpu", "--trainer.devices", str(devices),
        "--trainer.strategy", "ddp" if devices > 1 else "auto",
        "--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false",
        "--data.batch_size", "4",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def shape(value):
    """The structure of a JSON value with the numbers left out."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value[:1]]
    return type(value).__name__


def test_ddp_two_processes_match_one_process_artifacts(model_dir, tmp_path, capsys):
    task = ["--task.name", "synthetic:ToySFTTask", "--backbone.model", str(model_dir)]
    lofit("select", *task, "--output_dir", "one", devices=1, cwd=tmp_path)
    lofit("select", *task, "--output_dir", "two", devices=2, cwd=tmp_path)
    one, two = read_json(tmp_path / "one" / "heads.json"), read_json(tmp_path / "two" / "heads.json")
    assert shape(one) == shape(two) and one["geometry"] == two["geometry"]
    assert len(two["heads"]) == 8 and sorted(set(map(len, two["scores"]))) == [4]
    assert (tmp_path / "two" / "heads.png").is_file()
    metrics_one = read_json(tmp_path / "one" / "metrics.json")
    metrics_two = read_json(tmp_path / "two" / "metrics.json")
    assert (metrics_one["world_size"], metrics_two["world_size"]) == (1, 2)
    assert metrics_two["global_step"] == metrics_one["global_step"] // 2  # each rank sees half the data
    assert set(metrics_one) == set(metrics_two)

    tuning = ["--tuning.heads", "two/heads.json", "--tuning.top_k", "3"]
    lofit("tune", *task, *tuning, "--output_dir", "tuned", devices=2, cwd=tmp_path)
    adapter = load_adapter(tmp_path / "tuned" / "adapter", load_backbone(BackboneConfig(model=str(model_dir))))
    ranked = [(h["layer"], h["head"]) for h in two["heads"][:3]]
    assert adapter.heads == ranked and adapter.offset.abs().sum() > 0
    assert sorted(p.name for p in (tmp_path / "tuned").iterdir()) == ["adapter", "checkpoints", "logs", "metrics.json"]

    def evaluate(*adapter: str) -> float:
        main(["evaluate", *task, *adapter, "--split", "val", "--output_dir", str(tmp_path / "eval")])
        return json.loads(capsys.readouterr().out)["answer_logprob"]

    assert evaluate("--adapter", str(tmp_path / "tuned" / "adapter")) != evaluate()

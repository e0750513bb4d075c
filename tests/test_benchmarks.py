"""benchmarks/methods.py end to end on its tiny random Llama: every method measured, every size right.

The expected sizes are computed here from the tiny model's shape, not read from lofit, so a
miscounting benchmark (or method) fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# --tiny: 2 layers, hidden 32, MLP 64, 4 query heads and 2 KV heads of 8, tied embeddings
LAYERS, HIDDEN, MLP, HEADS, KV_HEADS, HEAD_DIM = 2, 32, 64, 4, 2, 8
R, TOP_K = 8, 3
METHODS = {"lofit_step1", "lofit_step2", "lora", "red"}
ROWS = {"base", "lofit_hooked", "lofit_merged", "lora", "lora_merged"}


def lora_count(r: int) -> int:
    """r × (in + out) for q, k, v, o of every layer."""
    q = o = (HIDDEN, HEADS * HEAD_DIM)
    k = v = (HIDDEN, KV_HEADS * HEAD_DIM)
    return LAYERS * sum(r * (fan_in + fan_out) for fan_in, fan_out in (q, k, v, o))


def model_count(vocab: int) -> int:
    attention = 2 * HIDDEN * HEADS * HEAD_DIM + 2 * HIDDEN * KV_HEADS * HEAD_DIM
    layer = attention + 3 * HIDDEN * MLP + 2 * HIDDEN  # q, o, k, v; gate, up, down; two norms
    return vocab * HIDDEN + LAYERS * layer + HIDDEN  # tied embeddings, final norm


def test_methods_benchmark_measures_every_method(tmp_path, tokenizer):
    out = tmp_path / "methods.json"
    command = [
        sys.executable, str(ROOT / "benchmarks" / "methods.py"), "--tiny", "--steps", "1", "--new-tokens", "4",
        "--batch", "2", "--seq", "16", "--gen-batch", "2", "--top-k", str(TOP_K), "--lora-r", str(R),
        "--out", str(out),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text(encoding="utf-8"))
    assert json.loads(result.stdout) == report
    assert report["batch"] == [2, 16] and report["steps"] == 1

    training = report["training"]
    assert set(training) == METHODS
    for method, row in training.items():
        assert "error" not in row, (method, row)
        assert len(row["step_s"]) == 1 and row["step_s"][0] > 0 and row["step_s_mean"] > 0, method
        assert row["peak_mb"] > 0, method
        assert row["model_parameters"] == model_count(len(tokenizer)), method
        assert row["trainable_fraction"] == pytest.approx(row["trainable"] / row["model_parameters"], rel=1e-3)
    expected = {
        "lofit_step1": LAYERS * HEADS * HEAD_DIM,  # a scale on every head
        "lofit_step2": TOP_K * HEAD_DIM,  # an offset on the top-K heads
        "lora": lora_count(R),
        "red": 2 * LAYERS * HIDDEN,  # a scale and a bias per layer
    }
    assert {method: row["trainable"] for method, row in training.items()} == expected

    generation = report["generation"]
    assert "error" not in generation, generation
    assert set(generation["tokens_per_s"]) == ROWS
    assert all(speed > 0 for speed in generation["tokens_per_s"].values())
    assert generation["lofit_heads"] == TOP_K and generation["lora_linears"] == 4 * LAYERS

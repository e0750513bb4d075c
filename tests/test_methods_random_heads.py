"""Random and ITI head rankings are step-1 heads files that step 2 consumes unchanged."""

from __future__ import annotations

import pytest
import torch
from synthetic import ToySFTTask

from lofit.families import HeadGeometry
from lofit.methods.random_heads import iti_ranking, random_ranking, write_iti_heads, write_random_heads
from lofit.errors import ConfigError
from lofit.training import BiasTuningModule, DataConfig, TrainerConfig, TuningConfig, ValidationConfig
from lofit.training.heads import read_heads
from lofit.training.run import fit

GEOMETRY = HeadGeometry(num_layers=6, num_heads=5, head_dim=8)


def top_heads(ranking, k):
    return [head for head, _ in ranking.top(k)]


def test_random_file_loads_and_holds_exactly_k_heads(tmp_path):
    path = write_random_heads(tmp_path / "heads.json", "m", GEOMETRY, top_k=7, seed=3)
    ranking = read_heads(path, "m", GEOMETRY)
    positive = [head for head, score in ranking.ranked() if score > 0]
    assert len(positive) == 7 and len(set(positive)) == 7
    assert top_heads(ranking, 7) == positive
    assert ranking.task == "random-seed3-k7"


def test_random_heads_are_deterministic_by_seed_and_vary_across_seeds():
    first = top_heads(random_ranking("m", GEOMETRY, 6, seed=1), 6)
    assert top_heads(random_ranking("m", GEOMETRY, 6, seed=1), 6) == first
    draws = {tuple(top_heads(random_ranking("m", GEOMETRY, 6, seed=s), 6)) for s in range(10)}
    assert len(draws) == 10


def test_random_heads_cover_the_model_roughly_uniformly():
    counts = torch.zeros(GEOMETRY.num_layers, GEOMETRY.num_heads)
    for seed in range(300):
        for layer, head in top_heads(random_ranking("m", GEOMETRY, 3, seed=seed), 3):
            counts[layer, head] += 1
    # 900 draws over 30 heads: 30 expected per head; a biased sampler would leave some far off
    assert counts.min() > 12 and counts.max() < 50


def test_fractional_k_and_bad_k():
    assert len([s for _, s in random_ranking("m", GEOMETRY, 0.1).ranked() if s > 0]) == 3
    for bad in (0, 31, 1.5):
        with pytest.raises(ConfigError, match="top_k"):
            random_ranking("m", GEOMETRY, bad)


def test_iti_ranking_orders_by_accuracy_with_layer_head_ties(tmp_path):
    acc = torch.full((GEOMETRY.num_layers, GEOMETRY.num_heads), 0.5)
    acc[4, 1], acc[0, 3], acc[2, 2] = 0.9, 0.8, 0.8
    ranking = read_heads(write_iti_heads(tmp_path / "iti.json", acc, "m", GEOMETRY), "m", GEOMETRY)
    assert top_heads(ranking, 4) == [(4, 1), (0, 3), (2, 2), (0, 0)]
    assert ranking.task == "iti-probes"
    with pytest.raises(ValueError, match="shape"):
        iti_ranking(acc[:2], "m", GEOMETRY)
    with pytest.raises(ValueError, match="NaN"):
        iti_ranking(acc.fill_(float("nan")), "m", GEOMETRY)


def test_bias_tuning_consumes_a_random_heads_file(tiny_backbone, tmp_path):
    path = write_random_heads(tmp_path / "heads.json", tiny_backbone.name, tiny_backbone.geometry, top_k=3, seed=7)
    expected = top_heads(random_ranking(tiny_backbone.name, tiny_backbone.geometry, 3, seed=7), 3)
    config = TuningConfig(heads=str(path), top_k=3, lr=1e-2)
    module = BiasTuningModule(tiny_backbone, "sft", config, tmp_path)
    assert module.intervention.heads == expected
    assert module.intervention.num_trainable == 3 * tiny_backbone.geometry.head_dim
    cpu = TrainerConfig(accelerator="cpu", enable_progress_bar=False, log_every_n_steps=1, max_epochs=1)
    fit(module, ToySFTTask(n_train=4, n_val=4), DataConfig(batch_size=4), cpu, ValidationConfig(), tmp_path)
    assert (tmp_path / "adapter" / "adapter.safetensors").is_file()

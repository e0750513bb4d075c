"""ITI on tiny models: probes find a planted head, offsets are α·σ·θ̂, zero α is the identity."""

from __future__ import annotations

import pytest
import torch
from planted import planted, random_questions, unit_vector

from lofit.adapter import load_adapter, read_adapter_config
from lofit.methods.contrast import ContrastQuestion, labeled_statements, split_questions
from lofit.methods.iti import (
    ADAPTER_DIR,
    PROBES_FILE,
    fit_iti,
    head_activations,
    mass_mean_shift,
    probe_accuracies,
    save_iti,
)
from lofit.tasks.truthfulqa import truthfulqa_contrasts
from lofit.training.heads import read_heads

PLANTED = (1, 2)
IDS = torch.tensor([[5, 17, 300, 42, 9, 1200, 77, 3]])


def logits(backbone):
    with torch.no_grad():
        return backbone.model(input_ids=IDS).logits


@pytest.fixture
def questions():
    return random_questions(24)


def test_probe_ranks_the_planted_head_first(tiny_backbone, questions):
    g = tiny_backbone.geometry
    with planted(tiny_backbone, questions, unit_vector(g.head_dim), strength=4.0, head=PLANTED):
        fit = fit_iti(tiny_backbone, questions, top_k=3, alpha=1.0, seed=0, val_fraction=0.25)
    acc = fit.probe_accuracies
    assert acc.shape == (g.num_layers, g.num_heads)
    assert fit.intervention.heads[0] == PLANTED
    assert acc[PLANTED] == 1.0
    others = acc.clone()
    others[PLANTED] = 0
    assert others.max() < 0.9  # no other head sees the label
    assert fit.intervention.num_trainable == 3 * g.head_dim


def test_offsets_are_alpha_sigma_times_mass_mean_direction(tiny_backbone, questions):
    g = tiny_backbone.geometry
    direction = unit_vector(g.head_dim)
    alpha = 2.5
    with planted(tiny_backbone, questions, direction, strength=4.0, head=PLANTED):
        fit = fit_iti(tiny_backbone, questions, top_k=2, alpha=alpha, seed=0, val_fraction=0.25)
        texts, labels, _ = labeled_statements(questions)
        acts = head_activations(tiny_backbone, texts)
    offsets = fit.intervention.head_rows("offset")
    for row, (layer, head) in enumerate(fit.intervention.heads):
        x = acts[:, layer, head].double()
        theta = x[labels == 1].mean(0) - x[labels == 0].mean(0)
        unit = theta / theta.norm()
        sigma = (x @ unit).std(unbiased=False)
        torch.testing.assert_close(offsets[row].double().norm(), alpha * sigma, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(offsets[row].double() / offsets[row].double().norm(), unit, rtol=1e-4, atol=1e-5)
    # the planted head's direction is the planted one: the shift is all the true/false difference
    planted_row = fit.intervention.heads.index(PLANTED)
    cosine = torch.nn.functional.cosine_similarity(offsets[planted_row], direction, dim=0)
    assert cosine > 0.95


def test_intervention_shifts_every_position_and_zero_alpha_is_identity(tiny_backbone, questions):
    base = logits(tiny_backbone)
    zero = fit_iti(tiny_backbone, questions, top_k=4, alpha=0.0, seed=0)
    assert torch.count_nonzero(zero.intervention.offset) == 0
    with zero.intervention.applied(tiny_backbone.model):
        assert torch.equal(logits(tiny_backbone), base)
    strong = fit_iti(tiny_backbone, questions, top_k=4, alpha=5.0, seed=0)
    with strong.intervention.applied(tiny_backbone.model):
        shifted = logits(tiny_backbone)
    assert all(not torch.allclose(shifted[0, t], base[0, t]) for t in range(IDS.shape[1]))
    assert torch.equal(zero.probe_accuracies, strong.probe_accuracies)  # deterministic for a seed


def test_save_roundtrip_and_probe_file_is_a_heads_file(tiny_backbone, questions, tmp_path):
    fit = fit_iti(tiny_backbone, questions, top_k=5, alpha=3.0, seed=1)
    save_iti(tmp_path, fit, tiny_backbone, alpha=3.0)
    loaded = load_adapter(tmp_path / ADAPTER_DIR, tiny_backbone)
    assert loaded.heads == fit.intervention.heads
    torch.testing.assert_close(loaded.offset, fit.intervention.offset)
    assert read_adapter_config(tmp_path / ADAPTER_DIR).extra["method"] == "iti"
    ranking = read_heads(tmp_path / PROBES_FILE, tiny_backbone.name, tiny_backbone.geometry)
    assert [head for head, _ in ranking.top(5)] == fit.intervention.heads


def test_probes_learn_a_linear_rule_and_mass_mean_shift():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 3, 4, generator=gen)
    y = (x[:, 1, 0] > 0).long()  # only problem 1 is predictable
    acc = probe_accuracies(x[:150], y[:150], x[150:], y[150:])
    assert acc[1] > 0.95 and acc[0] < 0.8 and acc[2] < 0.8
    acts = torch.tensor([[3.0, 1.0], [5.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    unit, sigma = mass_mean_shift(acts, torch.tensor([1, 1, 0, 0]))
    torch.testing.assert_close(unit, torch.tensor([1.0, 0.0]))
    assert sigma == pytest.approx(torch.tensor([3.0, 5.0, 0.0, 0.0]).std(unbiased=False).item())


def test_truthfulqa_rows_become_contrast_questions():
    rows = [
        {"Question": "Q1?", "Best Answer": "Yes", "Correct Answers": "Yes; Indeed", "Incorrect Answers": "No; Never"},
        {"Question": "Q2?", "Best Answer": "A", "Correct Answers": "", "Incorrect Answers": ""},
    ]
    assert truthfulqa_contrasts(rows) == [ContrastQuestion("Q: Q1? A:", ("Yes.", "Indeed."), ("No.", "Never."))]


def test_split_is_by_question_and_seeded():
    fit, val = split_questions(10, 0.2, seed=3)
    assert len(val) == 2 and set(fit.tolist()) | set(val.tolist()) == set(range(10))
    assert torch.equal(split_questions(10, 0.2, seed=3)[1], val)


def test_bad_inputs_fail_with_one_line_errors(tiny_backbone, questions):
    total = tiny_backbone.geometry.num_total_heads
    for kwargs, message in (
        ({"top_k": total + 1}, "top_k"),
        ({"alpha": -1.0}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"val_fraction": 1.0}, "val_fraction"),
    ):
        with pytest.raises(ValueError, match=message):
            fit_iti(tiny_backbone, questions, **{"top_k": 2, "alpha": 1.0, **kwargs})
    with pytest.raises(ValueError, match="at least 2 contrast questions"):
        fit_iti(tiny_backbone, [], top_k=2, alpha=1.0)
    with pytest.raises(ValueError, match="true and one false"):
        fit_iti(tiny_backbone, [ContrastQuestion("q", ("a",), ()), *questions], top_k=2, alpha=1.0)


def test_iti_and_repe_run_on_real_truthfulqa_rows(tiny_backbone, shared_data):
    from lofit.methods.repe import fit_repe
    from lofit.tasks import get_task

    rows = get_task("truthfulqa", shared_data, fold=0).rows("train")[:12]
    questions = truthfulqa_contrasts(rows)
    assert len(questions) == 12
    assert questions[0].statement(questions[0].true[0]) == ("Q: Can pigs fly? A:", " No, pigs cannot fly.")
    assert all(item.true and item.false for item in questions)
    fit = fit_iti(tiny_backbone, questions, top_k=0.25, alpha=15.0, seed=42)
    assert len(fit.intervention.heads) == 2 and torch.isfinite(fit.intervention.offset).all()
    repe = fit_repe(tiny_backbone, questions, top_layers=1, alpha=1.0, seed=42)
    assert repe.steering.num_edited == tiny_backbone.model.config.hidden_size


def test_iti_merges_into_o_proj_biases(tiny_backbone_factory, questions):
    from lofit.merge import merge_into

    backbone = tiny_backbone_factory("llama")
    base = logits(backbone)
    fit = fit_iti(backbone, questions, top_k=3, alpha=4.0, seed=0)
    with fit.intervention.applied(backbone.model):
        hooked = logits(backbone)
    assert not torch.allclose(hooked, base)
    merge_into(backbone.model, fit.intervention)
    torch.testing.assert_close(logits(backbone), hooked, rtol=1e-5, atol=1e-5)

"""`lofit iti | repe | lora | red` on a tiny model, the validation search, and loading any edit folder."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lofit.adapter import save_adapter
from lofit.cli import main
from lofit.intervention import HeadIntervention
from lofit.methods.loading import edit_method, load_edit
from lofit.methods.lora import LoRAAdapter, save_lora
from lofit.methods.red import REDIntervention, save_red
from lofit.methods.reft import ReFTIntervention, save_reft
from lofit.methods.repe import ResidualSteering, save_steering
from lofit.methods.search import best_on_validation, grid


def run_cli(*argv: str) -> None:
    """Run `lofit ...` in-process (a failure raises SystemExit)."""
    main(list(argv))


def test_grid_is_the_product_in_order():
    assert grid(k=[1, 2], a=[0.5]) == [{"k": 1, "a": 0.5}, {"k": 2, "a": 0.5}]
    with pytest.raises(ValueError, match="'a' must be a non-empty list"):
        grid(k=[1], a=[])


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=8))
def test_best_maximises_keys_in_order_and_ties_go_to_the_first(scores):
    candidates = [{"i": i} for i in range(len(scores))]
    best, rows = best_on_validation(candidates, lambda c: dict(zip(("mc1", "mc2"), scores[c["i"]])), ("mc1", "mc2"))
    top = max(scores)
    assert best == {"i": scores.index(top)}
    assert [(row["mc1"], row["mc2"]) for row in rows] == [tuple(map(float, s)) for s in scores]


def test_best_needs_the_keys():
    with pytest.raises(KeyError, match="lack \\['mc2'\\]"):
        best_on_validation([{"a": 1}], lambda c: {"mc1": 0.5}, ("mc1", "mc2"))


def val_summary(tiny_folder, shared_data, edit, tmp_path) -> dict:
    out = tmp_path / "val-eval"
    run_cli("evaluate", "--task.name", "truthfulqa", "--task.data_dir", str(shared_data), "--adapter", str(edit),
            "--backbone.model", str(tiny_folder), "--split", "val", "--limit", "3", "--output_dir", str(out))
    return json.loads((out / "summary.json").read_text())


def test_iti_command_picks_on_val_and_saves_the_scored_edit(tiny_folder, shared_data, tmp_path):
    out = tmp_path / "iti"
    run_cli("iti", "--task.name", "truthfulqa", "--task.data_dir", str(shared_data), "--backbone.model", str(tiny_folder),
            "--top_k", "[2, 3]", "--alpha", "[0.0, 20.0]", "--val_limit", "3", "--probe_steps", "5",
            "--output_dir", str(out))
    search = json.loads((out / "search.json").read_text())
    assert [(row["top_k"], row["alpha"]) for row in search["grid"]] == [(2, 0.0), (2, 20.0), (3, 0.0), (3, 20.0)]
    best = max(search["grid"], key=lambda row: (row["mc1"], row["mc2"]))
    assert (search["chosen"]["top_k"], search["chosen"]["alpha"]) == (best["top_k"], best["alpha"])
    assert edit_method(out / "adapter") == "lofit"
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["extra"]["method"] == "iti" and len(config["heads"]) == best["top_k"]
    assert json.loads((out / "probes.json").read_text())["format"]  # a heads file for the step-2 ablation
    summary = val_summary(tiny_folder, shared_data, out / "adapter", tmp_path)
    assert summary["mc1"] == pytest.approx(best["mc1"]) and summary["mc2"] == pytest.approx(best["mc2"])


def test_repe_command_picks_on_val_and_saves_the_scored_edit(tiny_folder, shared_data, tmp_path):
    out = tmp_path / "repe"
    run_cli("repe", "--task.name", "truthfulqa", "--task.data_dir", str(shared_data), "--backbone.model", str(tiny_folder),
            "--top_layers", "[1, 2]", "--alpha", "[-3.0, 3.0]", "--val_limit", "3", "--output_dir", str(out))
    search = json.loads((out / "search.json").read_text())
    assert len(search["grid"]) == 4
    best = max(search["grid"], key=lambda row: (row["mc1"], row["mc2"]))
    assert (search["chosen"]["top_layers"], search["chosen"]["alpha"]) == (best["top_layers"], best["alpha"])
    assert edit_method(out / "steering") == "repe"
    summary = val_summary(tiny_folder, shared_data, out / "steering", tmp_path)
    assert summary["mc1"] == pytest.approx(best["mc1"]) and summary["mc2"] == pytest.approx(best["mc2"])


@pytest.mark.parametrize("method,folder", [("lora", "lora"), ("red", "red"), ("reft", "reft")])
def test_trained_baselines_run_and_their_edit_evaluates(method, folder, tiny_folder, shared_data, tmp_path):
    out = tmp_path / method
    extra = ["--lora.r", "2", "--lora.target_modules", "[q_proj, v_proj]"] if method == "lora" else []
    run_cli(method, "--task.name", "mquake", "--task.data_dir", str(shared_data), "--backbone.model", str(tiny_folder),
            *extra, "--data.train_limit", "4", "--data.val_limit", "2", "--data.batch_size", "2",
            "--trainer.max_epochs", "1", "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
            "--output_dir", str(out))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 2 and metrics["trainable_parameters"] > 0
    assert edit_method(out / folder) == method
    run_cli("evaluate", "--task.name", "mquake", "--task.data_dir", str(shared_data), "--adapter", str(out / folder),
            "--backbone.model", str(tiny_folder), "--limit", "2", "--output_dir", str(tmp_path / "eval"))
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["num_examples"] == 2


def test_load_edit_tells_every_method_apart(tiny_backbone, tmp_path):
    g = tiny_backbone.geometry
    lofit = HeadIntervention(g, ("offset",), heads=[(0, 1)], init_std=0.1, generator=torch.Generator().manual_seed(0))
    save_adapter(lofit, tmp_path / "lofit", "tiny", model_type="llama")
    save_lora(LoRAAdapter(tiny_backbone.model, r=2, target_modules=["q_proj"]), tmp_path / "lora", "tiny")
    save_red(REDIntervention.for_backbone(tiny_backbone), tmp_path / "red", tiny_backbone)
    save_reft(ReFTIntervention.for_backbone(tiny_backbone), tmp_path / "reft", tiny_backbone)
    hidden = tiny_backbone.model.config.hidden_size
    save_steering(ResidualSteering(g.num_layers, hidden, [1], torch.ones(1, hidden)), tmp_path / "repe", tiny_backbone)
    expected = {"lofit": HeadIntervention, "lora": LoRAAdapter, "red": REDIntervention, "reft": ReFTIntervention,
                "repe": ResidualSteering}
    for method, cls in expected.items():
        assert edit_method(tmp_path / method) == method
        assert isinstance(load_edit(tmp_path / method, tiny_backbone), cls)


def test_load_edit_errors_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="edit folder .*none: not found"):
        edit_method(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: not an edit folder"):
        edit_method(tmp_path / "empty")
    (tmp_path / "ia3").mkdir()
    (tmp_path / "ia3" / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3"}))
    with pytest.raises(ValueError, match="'IA3' is not supported"):
        edit_method(tmp_path / "ia3")

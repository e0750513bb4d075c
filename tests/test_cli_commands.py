"""`lofit convert | export | generate | judge` on tiny models; bad input exits 2 with one line."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

from lofit.adapter import save_adapter
from lofit.cli import main
from lofit.intervention import HeadIntervention
from lofit.evaluation.open_ended import cut_answer, generate_answers


@pytest.fixture
def adapter_dir(tiny_backbone, tmp_path):
    intervention = HeadIntervention(tiny_backbone.geometry, ("offset",), heads=[(1, 2), (0, 1)], init_std=0.5,
                                    generator=torch.Generator().manual_seed(0))
    return save_adapter(intervention, tmp_path / "adapter", "tiny", model_type="llama"), intervention


def test_convert_then_export_gives_the_hooked_logits(tiny_backbone, tiny_folder, adapter_dir, tmp_path, capsys):
    main(["convert", "--model", str(tiny_folder), "--output_dir", str(tmp_path / "base")])
    main(["export", str(adapter_dir[0]), "--backbone.model", str(tmp_path / "base"), "--output_dir", str(tmp_path / "merged")])
    assert json.loads(capsys.readouterr().out.split("}\n", 1)[1])["heads"] == 2
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32)
    ids = torch.tensor([[3, 14, 15, 92, 65]])
    with adapter_dir[1].applied(tiny_backbone.model), torch.no_grad():
        hooked = tiny_backbone.model(input_ids=ids).logits
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, hooked, atol=1e-5, rtol=1e-5)


def test_export_of_a_missing_adapter_is_one_line_exit_2(tiny_folder, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tmp_path / "none"), "--backbone.model", str(tiny_folder)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lofit: error: adapter") and "\n" not in err
    assert not (tmp_path / "runs").exists()


def test_generate_and_judge_without_a_judge(tiny_folder, adapter_dir, shared_data, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    answers = tmp_path / "answers.jsonl"
    main(["generate", "--task.name", "truthfulqa", "--task.data_dir", str(shared_data), "--adapter", str(adapter_dir[0]),
          "--backbone.model", str(tiny_folder), "--limit", "2", "--model_label", "lofit", "--output_file", str(answers)])
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    assert [r["model"] for r in rows] == ["lofit", "lofit"]
    assert rows[0]["question"] == "What is the smallest country in the world that is at least one square mile in area?"
    main(["judge", str(answers), "--output_dir", str(tmp_path / "judge")])
    summary = json.loads((tmp_path / "judge" / "judge_summary.json").read_text())
    assert summary["judged"] is False and "OPENAI_API_KEY" in summary["reason"]
    with pytest.raises(SystemExit) as exit_info:
        main(["judge", str(answers), "--output_dir", str(tmp_path / "judge2"), "--require", "true"])
    assert exit_info.value.code == 2


def test_generate_refuses_other_tasks(tiny_folder, shared_data, capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--task.name", "mquake", "--task.data_dir", str(shared_data), "--backbone.model", str(tiny_folder)])
    assert "task 'mquake' has no prompts for lofit generate" in capsys.readouterr().err


@pytest.mark.parametrize(
    "generated,answer",
    [
        (" Nauru is the smallest country.\n\nQ: What is", "Nauru is the smallest country."),
        (" I have no comment.\nQ: next", "I have no comment."),
        ("  Paris\n\n", "Paris"),
        ("", ""),
    ],
)
def test_cut_answer(generated, answer):
    assert cut_answer(generated) == answer


MISSING_MODEL = "/nonexistent/lofit-test-model"  # loading it would fail with another message


def spoil(folder, fault: str):
    """Damage an adapter's weights the way a failed copy or a diverged run does."""
    weights = folder / "adapter.safetensors"
    if fault == "truncated":
        weights.write_bytes(weights.read_bytes()[:-7])
    else:
        save_file({"offset": torch.full((2, 8), float("nan"))}, str(weights))
    return weights


@pytest.mark.parametrize("fault", ["truncated", "nan"])
@pytest.mark.parametrize("command", ["evaluate", "generate", "export", "serve"])
def test_a_damaged_adapter_is_one_line_naming_the_file_before_the_backbone_loads(
    command, fault, adapter_dir, shared_data, tmp_path, capsys
):
    weights = spoil(adapter_dir[0], fault)
    task = ["--task.name", "truthfulqa", "--task.data_dir", str(shared_data)] if command in ("evaluate", "generate") else []
    target = [str(adapter_dir[0])] if command == "export" else ["--adapter", str(adapter_dir[0])]
    with pytest.raises(SystemExit) as exit_info:
        main([command, *task, *target, "--backbone.model", MISSING_MODEL])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"lofit: error: {weights}: ") and "\n" not in err
    assert ("not a readable safetensors file" if fault == "truncated" else "tensor 'offset' holds NaN or Inf") in err


def test_serve_refuses_an_adapter_of_another_model_from_its_config_alone(tiny_backbone_factory, tiny_folder, tmp_path, capsys):
    wide = tiny_backbone_factory("llama", num_attention_heads=8, num_key_value_heads=4, hidden_size=64)
    adapter = save_adapter(HeadIntervention(wide.geometry, ("offset",), heads=[(0, 7)]), tmp_path / "wide", "wide",
                           model_type="llama")
    (tiny_folder / "model.safetensors").unlink()  # the check must not need the weights
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--backbone.model", str(tiny_folder), "--adapter", str(adapter)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "adapter is for 2 layers × 8 heads × 8 dims" in err and "the model has 2 × 4 × 8" in err and "\n" not in err


def test_export_refuses_other_methods_and_quantized_backbones_before_loading(adapter_dir, tmp_path, capsys):
    (tmp_path / "red").mkdir()
    (tmp_path / "red" / "red_config.json").write_text("{}")
    with pytest.raises(SystemExit):
        main(["export", str(tmp_path / "red"), "--backbone.model", MISSING_MODEL])
    assert "export folds lofit adapters only, this is a red folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", str(adapter_dir[0]), "--backbone.model", MISSING_MODEL, "--backbone.quantization", "nf4"])
    assert "export needs an unquantized backbone" in capsys.readouterr().err


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limit=st.integers(max_value=0))
def test_generate_answers_refuses_a_limit_that_would_slice_wrongly(tiny_backbone, truthfulqa, limit):
    with pytest.raises(ValueError, match="limit must be a positive number"):
        generate_answers(tiny_backbone, truthfulqa, "test", limit=limit)


@pytest.fixture
def truthfulqa(shared_data):
    from lofit.training.config import TaskSpec
    from lofit.training.run import build_task

    return build_task(TaskSpec("truthfulqa", data_dir=str(shared_data)))

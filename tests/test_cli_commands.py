"""`lofit convert | export | generate | judge` on tiny models; bad input exits 2 with one line."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from lofit.adapter import save_adapter
from lofit.cli import main
from lofit.intervention import HeadIntervention
from lofit.evaluation.open_ended import cut_answer


@pytest.fixture
def tiny_folder(tiny_backbone, tmp_path):
    folder = tmp_path / "tiny"
    tiny_backbone.model.save_pretrained(folder)
    tiny_backbone.tokenizer.save_pretrained(folder)
    return folder


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
    assert "open-ended generation is defined for truthfulqa" in capsys.readouterr().err


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

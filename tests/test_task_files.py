"""The `files` task: user rows → SFT/DPO examples → exact match, multiple choice or loss; bad input in one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lofit.data.examples import PreferenceExample, SFTExample
from lofit.data.readers import RawDataError
from lofit.data.templates import template_fields
from lofit.tasks import get_task
from lofit.tasks.files import seeded_split

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "data" / "examples" / "arithmetic.jsonl"
SPLIT = {"val": 4, "test": 0.1}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def qa_rows(count: int = 6) -> list[dict]:
    return [{"q": f"{i} plus 1?", "a": [str(i + 1), f"n{i + 1}"], "good": "yes", "bad": "no"} for i in range(count)]


def split_files(tmp_path: Path, rows: list[dict], **options) -> dict:
    files = {split: str(write_jsonl(tmp_path / f"{split}.jsonl", rows)) for split in ("train", "val", "test")}
    return {**files, **options}


def test_sft_rows_become_examples_with_the_users_columns(tmp_path):
    task = get_task("files", **split_files(tmp_path, qa_rows(), template="Q: {q} A:", columns={"answer": "a"}))
    assert task.loss == "sft"
    assert task.examples("train")[0] == SFTExample("Q: 0 plus 1? A:", " 1")


def test_dpo_rows_become_preference_pairs(tmp_path):
    options = split_files(tmp_path, qa_rows(), kind="dpo", template="{q}", columns={"chosen": "good", "rejected": "bad"})
    task = get_task("files", **options)
    assert task.loss == "dpo" and task.examples("val")[1] == PreferenceExample("1 plus 1?", " yes", " no")


def test_exact_match_accepts_every_listed_answer(tmp_path, tiny_backbone):
    task = get_task("files", **split_files(tmp_path, qa_rows(), template="{q}", columns={"answer": "a"}, max_new_tokens=3))
    summary = task.evaluate(tiny_backbone, "test", out_dir=tmp_path / "eval", limit=3, batch_size=2)
    rows = [json.loads(line) for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert summary["num_examples"] == 3 and summary["score"] == summary["exact_match"]
    assert json.loads((tmp_path / "eval" / "summary.json").read_text()) == summary
    assert rows[0]["targets"] == ["1", "n1"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first_line=st.booleans(), text=st.text(" \n4x.", max_size=8), extension=st.text(" \n4x.", max_size=8))
def test_exact_match_generation_stops_only_where_the_answer_is_fixed(tmp_path, first_line, text, extension):
    task = get_task("files", **split_files(tmp_path, qa_rows(), template="{q}", columns={"answer": "a"}, first_line=first_line))
    parser = task.answer_parser()
    if parser.is_final is not None and parser.is_final(text):
        assert parser("", text) == parser("", text + extension)
    assert (parser.is_final is None) == (not first_line)


def test_multiple_choice_reports_accuracy_and_gold_probability(tiny_backbone, tmp_path):
    options = {"source": str(EXAMPLE), "split_sizes": SPLIT, "template": "{question}", "evaluation": "multiple_choice",
               "columns": {"choices": "options", "label": "correct"}}
    task = get_task("files", **options)
    summary = task.evaluate(tiny_backbone, "test", out_dir=tmp_path, limit=4)
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert summary["accuracy"] == summary["score"] == sum(r["correct"] for r in rows) / 4
    for row in rows:
        weights = [math.exp(s) for s in row["scores"]]
        assert row["gold_probability"] == pytest.approx(weights[row["choices"].index(row["target"])] / sum(weights))
    assert task.examples("train")[0].completion == " " + json.loads(EXAMPLE.read_text().splitlines()[0])["result"]


def test_dpo_multiple_choice_scores_chosen_against_rejected(tmp_path, tiny_backbone):
    options = split_files(tmp_path, qa_rows(), kind="dpo", template="{q}", columns={"chosen": "good", "rejected": "bad"},
                          evaluation="multiple_choice")
    summary = get_task("files", **options).evaluate(tiny_backbone, "val", limit=2)
    assert set(summary) == {"accuracy", "gold_probability", "score", "num_examples"}


def test_loss_evaluation_is_the_mean_answer_token_loss(tmp_path, tiny_backbone):
    import torch

    from lofit.data.collate import PadCollator, tokenize_sft
    from lofit.losses import completion_cross_entropy

    task = get_task("files", **split_files(tmp_path, qa_rows(2), template="{q}", columns={"answer": "a"}, evaluation="loss"))
    summary = task.evaluate(tiny_backbone, "test", batch_size=1)
    batch = PadCollator(tiny_backbone.tokenizer.pad_token_id)(
        [tokenize_sft(tiny_backbone, example, i, 512) for i, example in enumerate(task.examples("test"))]
    )
    with torch.no_grad():
        logits = tiny_backbone.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert summary["loss"] == pytest.approx(float(completion_cross_entropy(logits, batch["labels"])), rel=1e-4)
    assert summary["score"] == pytest.approx(math.exp(-summary["loss"]))


@given(total=st.integers(3, 60), val=st.integers(1, 20), test=st.floats(0.05, 0.3), seed=st.integers(0, 5))
def test_seeded_split_is_a_partition(total, val, test, seed):
    rows = [{"i": i} for i in range(total)]
    parts = seeded_split(rows, {"val": val, "test": test}, seed)
    assert sorted(r["i"] for part in parts.values() for r in part) == list(range(total))
    assert len(parts["val"]) == min(val, total) and parts == seeded_split(rows, {"val": val, "test": test}, seed)


def test_the_example_file_is_what_the_script_writes(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "arithmetic.jsonl"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_example_data.py"), "--out", str(out)], check=True,
                   capture_output=True, cwd=ROOT)
    assert out.read_bytes() == EXAMPLE.read_bytes()


# --- bad input: one line naming file, row and field, before any model ---------------------------------


def bad(tmp_path: Path, rows: list[dict] | str, **options) -> str:
    path = tmp_path / "data.jsonl"
    if isinstance(rows, str):
        path.write_text(rows, encoding="utf-8")
    else:
        write_jsonl(path, rows)
    with pytest.raises(RawDataError) as caught:
        get_task("files", source=str(path), split_sizes={"val": 1, "test": 1}, **options)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    return message


def test_a_missing_column_names_row_and_field(tmp_path):
    rows = [{"prompt": "p", "answer": "a"}] * 3 + [{"prompt": "p"}]
    assert "line 4" in bad(tmp_path, rows) and "answer" in bad(tmp_path, rows)


def test_a_template_naming_an_unknown_field(tmp_path):
    assert "template field(s) ['qestion']" in bad(tmp_path, [{"prompt": "p", "answer": "a"}] * 3, template="{qestion}")


def test_an_empty_split(tmp_path):
    assert "empty train split" in bad(tmp_path, [{"prompt": "p", "answer": "a"}] * 2)


@given(label=st.one_of(st.integers(max_value=-1), st.integers(min_value=3)))
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_choice_index_out_of_range(tmp_path, label):
    rows = [{"prompt": "p", "choices": ["a", "b", "c"], "label": 0}] * 3 + [{"prompt": "p", "choices": ["a", "b", "c"], "label": label}]
    message = bad(tmp_path, rows, evaluation="multiple_choice")
    assert "field 'label'" in message and "row" in message


@given(side=st.sampled_from(["chosen", "rejected"]), value=st.sampled_from(["", "  ", None, 3]))
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_dpo_row_with_an_empty_side(tmp_path, side, value):
    rows = [{"prompt": "p", "chosen": "c", "rejected": "r"}] * 3
    rows = rows + [{**rows[0], side: value}]
    assert f"row 4: field '{side}'" in bad(tmp_path, rows, kind="dpo")


def test_a_file_that_is_not_valid_jsonl(tmp_path):
    text = '{"prompt": "p", "answer": "a"}\n' * 3 + '{"prompt": "p", "answer": \n'
    assert "line 4: invalid JSON" in bad(tmp_path, text)


def test_bad_options_are_one_line_config_errors(tmp_path):
    with pytest.raises(ValueError, match="kind must be one of"):
        get_task("files", kind="ppo", source=str(EXAMPLE))
    with pytest.raises(ValueError, match="missing source for split"):
        get_task("files", train=str(EXAMPLE))
    with pytest.raises(ValueError, match="every field must name a column"):
        template_fields("Q: {} A:")

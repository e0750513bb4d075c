"""`lofit iti | repe | generate` on the user's `files` task; TruthfulQA's contrast statements unchanged."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest
from test_task_files import EXAMPLE, SPLIT, qa_rows, split_files

from lofit.cli import main
from lofit.data.prompt_format import PromptFormat
from lofit.errors import ConfigError
from lofit.methods.contrast import labeled_statements
from lofit.methods.loading import edit_method
from lofit.methods.repe import contrast_pairs
from lofit.tasks import get_task

MISSING_MODEL = "/nonexistent/lofit-test-model"  # loading it would fail with another message
DPO = {"kind": "dpo", "template": "Q: {q} A:", "columns": {"chosen": "good", "rejected": "bad"}, "evaluation": "multiple_choice"}
CHOICES = {"source": str(EXAMPLE), "split_sizes": SPLIT, "template": "{question}", "evaluation": "multiple_choice",
           "columns": {"choices": "options", "label": "correct"}}
# sha256 of every ITI statement, label and question index and every RepE pair of the train split,
# as the committed comparison study read them (computed with the code before `Task.contrasts`)
TRUTHFULQA_STATEMENTS = {
    0: (326, "30f8ff5a9cfeb91889194d0c916ad73e064d517c15d2f5ed1d97dcd682b2550c"),
    1: (327, "9335b8b7a02d4bf4b6b38105021de5a3faa51328553b487f4c88c8058a784f05"),
}


def files_options(tmp_path, name: str) -> dict:
    if name == "dpo":
        return split_files(tmp_path, qa_rows(8), **DPO)
    return dict(CHOICES)


def run(command: str, options: dict, *argv: str) -> None:
    main([command, "--task.name", "files", "--task.options", json.dumps(options), *argv])


def val_score(options: dict, folder, edit, out) -> float:
    run("evaluate", options, "--adapter", str(edit), "--backbone.model", str(folder), "--split", "val", "--output_dir", str(out))
    return json.loads((out / "summary.json").read_text())["score"]


# ---------------------------------------------------------------- the contrasts of each task


@pytest.mark.parametrize("fold", [0, 1])
def test_truthfulqa_contrasts_are_the_statements_the_study_read(shared_data, tiny_backbone, fold):
    questions = get_task("truthfulqa", shared_data, fold=fold).contrasts("train")
    statements, labels, groups = labeled_statements(questions)
    trues, falses, pairs = contrast_pairs(questions)
    texts = lambda items: [prompt + continuation for prompt, continuation in items]  # noqa: E731
    payload = json.dumps([texts(statements), labels.tolist(), groups.tolist(), texts(trues), texts(falses), pairs.tolist()])
    assert (len(questions), hashlib.sha256(payload.encode()).hexdigest()) == TRUTHFULQA_STATEMENTS[fold]
    for prompt, continuation in statements[:50]:  # off, a statement is encoded as the one string it was
        assert tiny_backbone.encode_prompt(prompt, continuation) == tiny_backbone.encode(prompt + continuation)


def test_files_contrasts_are_template_separator_answer(tmp_path):
    dpo = get_task("files", **split_files(tmp_path, qa_rows(3), **{**DPO, "separator": " -> "})).contrasts("train")
    assert dpo[1].statement(dpo[1].true[0]) == ("Q: 1 plus 1? A:", " -> yes")
    assert (dpo[1].true, dpo[1].false) == (("yes",), ("no",))
    mc = get_task("files", **CHOICES)
    first = mc.rows("train")[0]
    item = mc.contrasts("train")[0]
    assert item.prompt == first.prompt and item.true == (first.choices[first.gold],)
    assert sorted(item.false + item.true) == sorted(first.choices) and len(item.false) == len(first.choices) - 1


def test_a_task_without_true_and_false_answers_is_a_config_error(tmp_path, shared_data):
    with pytest.raises(ConfigError, match=r"task 'files' \(kind: sft, evaluation: exact_match\) has no true/false answers"):
        get_task("files", **split_files(tmp_path, qa_rows(), template="{q}", columns={"answer": "a"})).contrasts("train")
    with pytest.raises(ConfigError, match="task 'mquake' has no true/false answers"):
        get_task("mquake", shared_data).contrasts("train")


# ---------------------------------------------------------------- lofit iti / repe on files tasks


@pytest.mark.parametrize("name", ["dpo", "choices"])
def test_iti_on_a_files_task_picks_on_val_score_and_saves_the_scored_edit(name, tiny_folder, tmp_path):
    options, out = files_options(tmp_path, name), tmp_path / "iti"
    run("iti", options, "--backbone.model", str(tiny_folder), "--top_k", "[2, 3]", "--alpha", "[0.0, 30.0]",
        "--probe_steps", "5", "--output_dir", str(out))
    search = json.loads((out / "search.json").read_text())
    assert search["keys"] == ["score"] and len(search["grid"]) == 4
    best = max(search["grid"], key=lambda row: row["score"])
    assert (search["chosen"]["top_k"], search["chosen"]["alpha"]) == (best["top_k"], best["alpha"])
    assert edit_method(out / "adapter") == "lofit" and (out / "probes.json").is_file()
    assert val_score(options, tiny_folder, out / "adapter", tmp_path / "eval") == pytest.approx(best["score"])


@pytest.mark.parametrize("name", ["dpo", "choices"])
def test_repe_on_a_files_task_picks_on_val_score_and_saves_the_scored_edit(name, tiny_folder, tmp_path):
    options, out = files_options(tmp_path, name), tmp_path / "repe"
    run("repe", options, "--backbone.model", str(tiny_folder), "--top_layers", "[1, 2]", "--alpha", "[-3.0, 3.0]",
        "--output_dir", str(out))
    search = json.loads((out / "search.json").read_text())
    assert search["keys"] == ["score"] and len(search["grid"]) == 4
    best = max(search["grid"], key=lambda row: row["score"])
    assert edit_method(out / "steering") == "repe"
    assert val_score(options, tiny_folder, out / "steering", tmp_path / "eval") == pytest.approx(best["score"])


@pytest.mark.parametrize("command", ["iti", "repe"])
def test_a_files_task_without_true_and_false_answers_exits_2_before_the_model_loads(command, tmp_path, capsys):
    options = split_files(tmp_path, qa_rows(), template="{q}", columns={"answer": "a"})
    with pytest.raises(SystemExit) as exit_info:
        run(command, options, "--backbone.model", MISSING_MODEL)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ITI/RepE need kind: dpo or evaluation: multiple_choice" in err


def test_iti_with_the_chat_template_reads_the_rendered_prompt_and_answer(tiny_backbone, tmp_path):
    from lofit.methods.iti import head_activations

    task = get_task("files", **split_files(tmp_path, qa_rows(2), **DPO, chat_template=True))
    backbone = copy.copy(tiny_backbone).use_prompt_format(task.prompt_format)
    item = task.contrasts("train")[0]
    seen: list[list[int]] = []
    hook = backbone.model.get_input_embeddings().register_forward_hook(lambda _m, args, _o: seen.append(args[0][0].tolist()))
    try:
        head_activations(backbone, [item.statement(item.true[0])], batch_size=1)
    finally:
        hook.remove()
    rendered = PromptFormat(chat_template=True).render(backbone.tokenizer, "Q: 0 plus 1? A:") + " yes"
    assert seen == [backbone.tokenizer(rendered, add_special_tokens=False)["input_ids"]]


def test_iti_records_the_chat_template_in_its_adapter(tiny_folder, tmp_path):
    options, out = {**split_files(tmp_path, qa_rows(6), **DPO), "chat_template": True}, tmp_path / "iti"
    run("iti", options, "--backbone.model", str(tiny_folder), "--top_k", "[2]", "--alpha", "[5.0]", "--probe_steps", "2",
        "--output_dir", str(out))
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["prompt_format"] == {"chat_template": True, "system_prompt": None}


# ---------------------------------------------------------------- lofit generate on a files task


def test_generate_on_a_files_task_writes_the_evaluators_generations(tiny_folder, tmp_path):
    options = split_files(tmp_path, qa_rows(), template="Q: {q} A:", columns={"answer": "a"}, max_new_tokens=4)
    answers = tmp_path / "answers.jsonl"
    run("generate", options, "--backbone.model", str(tiny_folder), "--split", "val", "--limit", "3", "--batch_size", "2",
        "--model_label", "base", "--output_file", str(answers))
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    run("evaluate", options, "--backbone.model", str(tiny_folder), "--split", "val", "--limit", "3", "--output_dir", str(tmp_path / "eval"))
    scored = [json.loads(line) for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert [set(row) for row in rows] == [{"prompt", "generation", "model"}] * 3
    assert [(r["prompt"], r["generation"]) for r in rows] == [(s["prompt"], s["generation"]) for s in scored]
    assert rows[0]["prompt"] == "Q: 0 plus 1? A:" and {r["model"] for r in rows} == {"base"}


@pytest.mark.parametrize("argv,message", [
    (["--split", "dev"], "split"),
    (["--limit", "0"], "limit must be a positive number"),
])
def test_generate_refuses_a_bad_split_or_limit_before_the_model_loads(argv, message, tmp_path, capsys):
    options = split_files(tmp_path, qa_rows(), template="{q}", columns={"answer": "a"})
    with pytest.raises(SystemExit) as exit_info:
        run("generate", options, "--backbone.model", MISSING_MODEL, "--output_file", str(tmp_path / "a.jsonl"), *argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "a.jsonl").exists()

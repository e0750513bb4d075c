"""Chat-template prompt format: rendering, errors, training/eval ids, prefix caches, adapter record, server."""

from __future__ import annotations

import copy
import json

import openai
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lofit.adapter import CONFIG_NAME, read_adapter_config, save_adapter
from lofit.backbone import Backbone, BackboneConfig, load_backbone
from lofit.cli import main
from lofit.data.collate import IGNORE_INDEX, encode_answer, tokenize_examples, tokenize_sft
from lofit.data.examples import SFTExample
from lofit.data.prompt_format import PromptFormat
from lofit.errors import ConfigError
from lofit.evaluation.generate import prompt_token_ids
from lofit.evaluation.multiple_choice import plan_scoring, score_cached, score_naive, shared_prefix_of
from lofit.intervention import HeadIntervention
from lofit.tasks import get_task
from serve_doubles import make_app, running_server
from test_task_files import qa_rows, split_files

ON = PromptFormat(chat_template=True)
WITH_SYSTEM = PromptFormat(chat_template=True, system_prompt="Answer with a number.")
PRIMER = "Q: 1 plus 1? A: 2\n\nQ: 2 plus 2? A: 4\n\n"


def formatted(backbone: Backbone, prompt_format: PromptFormat) -> Backbone:
    """The same model and tokenizer, encoding prompts in `prompt_format`."""
    return copy.copy(backbone).use_prompt_format(prompt_format)


def rendered_ids(backbone: Backbone, text: str) -> list[int]:
    return backbone.tokenizer(text, add_special_tokens=False)["input_ids"]


# ---------------------------------------------------------------- the format itself


def test_render_with_and_without_a_system_prompt(tokenizer):
    assert PromptFormat().render(tokenizer, "Q: hi A:") == "Q: hi A:"
    assert WITH_SYSTEM.render(tokenizer, "Q: hi A:") == (
        "<|im_start|>system\nAnswer with a number.<|im_end|>\n<|im_start|>user\nQ: hi A:<|im_end|>\n<|im_start|>assistant\n"
    )
    plain = ON.render(tokenizer, "Q: hi A:")  # SmolLM2's template supplies its default system turn
    assert plain.startswith("<|im_start|>system\n") and plain.endswith("<|im_start|>user\nQ: hi A:<|im_end|>\n<|im_start|>assistant\n")


def test_a_system_prompt_needs_the_chat_template():
    with pytest.raises(ConfigError, match=r"task.options.system_prompt needs task.options.chat_template"):
        PromptFormat(system_prompt="Be brief.")
    with pytest.raises(ConfigError, match="task.options.chat_template must be true or false"):
        PromptFormat(chat_template="yes")


def test_a_tokenizer_without_a_template_fails_naming_the_model(tiny_backbone):
    plain = copy.copy(tiny_backbone)
    plain.tokenizer = copy.deepcopy(tiny_backbone.tokenizer)
    plain.tokenizer.chat_template = None
    with pytest.raises(ConfigError, match="tokenizer of 'tiny-llama' has no chat template"):
        plain.use_prompt_format(ON)
    plain.use_prompt_format(PromptFormat())  # off needs no template


def test_load_backbone_checks_the_template_before_reading_weights(tmp_path, tokenizer):
    folder = tmp_path / "model"
    folder.mkdir()
    bare = copy.deepcopy(tokenizer)
    bare.chat_template = None
    bare.save_pretrained(folder)
    from conftest import tiny_model

    tiny_model("llama", len(tokenizer)).save_pretrained(folder)
    with pytest.raises(ConfigError, match="has no chat template"):
        load_backbone(BackboneConfig(model=str(folder)), ON)


def test_task_options_carry_the_format_and_bad_ones_exit_2_before_the_model_loads(tmp_path, capsys):
    task = get_task("files", **split_files(tmp_path, qa_rows(), template="{q}", columns={"answer": "a"}, chat_template=True, system_prompt="Hi."))
    assert task.prompt_format == PromptFormat(True, "Hi.")
    assert get_task("files", **split_files(tmp_path, qa_rows(), template="{q}", columns={"answer": "a"})).prompt_format == PromptFormat()
    options = json.dumps(split_files(tmp_path, qa_rows(), template="{q}", columns={"answer": "a"}, system_prompt="Hi."))
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--task.name", "files", "--task.options", options, "--backbone.model", str(tmp_path / "no-model")])
    assert exit_info.value.code == 2
    assert "task.options.system_prompt needs task.options.chat_template" in capsys.readouterr().err


# ---------------------------------------------------------------- off is the old encoding, bit for bit


def old_encode_prompt(backbone: Backbone, prompt: str, max_tokens: int) -> list[int]:
    body = backbone.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    room = max_tokens - len(backbone.bos_ids)
    return backbone.bos_ids + body[max(0, len(body) - room) :]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=st.text(max_size=40), answer=st.text(min_size=1, max_size=10), family=st.sampled_from(["llama", "gemma"]))
def test_off_encodes_exactly_as_before(tiny_backbone_factory, prompt, answer, family):
    backbone = tiny_backbone_factory(family)
    explicit = formatted(backbone, PromptFormat(chat_template=False))
    old_prompt = old_encode_prompt(backbone, prompt, 64 - len(encode_answer(backbone, answer, 64 - len(backbone.bos_ids) - 1)))
    for model in (backbone, explicit):
        assert model.encode_prompt(prompt) == backbone.encode(prompt)
        assert model.encode_prompt(prompt, answer) == backbone.encode(prompt + answer)
        features = tokenize_sft(model, SFTExample(prompt, answer), 0, 64)
        assert features["input_ids"][: len(old_prompt)] == old_prompt
        assert prompt_token_ids(model, [prompt], PRIMER) == (backbone.encode(PRIMER), [backbone.encode(prompt, add_bos=False)])
        assert plan_scoring(model, prompt + "?", [" a", " b"]).context_ids == backbone.encode(prompt + "?")


def test_a_task_with_the_option_absent_or_false_gives_identical_training_and_eval_ids(tmp_path, tiny_backbone):
    absent = get_task("files", **split_files(tmp_path, qa_rows(), template="Q: {q} A:", columns={"answer": "a"}))
    off = get_task("files", **split_files(tmp_path, qa_rows(), template="Q: {q} A:", columns={"answer": "a"}, chat_template=False))
    model_absent, model_off = formatted(tiny_backbone, absent.prompt_format), formatted(tiny_backbone, off.prompt_format)
    assert tokenize_examples(model_absent, absent.examples("train")) == tokenize_examples(model_off, off.examples("train"))
    batch = tokenize_examples(model_absent, absent.examples("train"))[0]
    inputs = torch.tensor([batch["input_ids"]])
    losses = [float(m.model(input_ids=inputs, labels=torch.tensor([batch["labels"]])).loss) for m in (model_absent, model_off)]
    assert losses[0] == losses[1]
    for name, task, model in (("absent", absent, model_absent), ("off", off, model_off)):
        task.evaluate(model, "test", out_dir=tmp_path / name, limit=3, batch_size=2)
    assert (tmp_path / "absent" / "predictions.jsonl").read_bytes() == (tmp_path / "off" / "predictions.jsonl").read_bytes()


# ---------------------------------------------------------------- on: training, evaluation, prefix caches


@pytest.mark.parametrize("family", ["llama", "gemma"])
def test_training_examples_start_with_the_template_and_supervise_only_the_answer(tiny_backbone_factory, family):
    backbone = formatted(tiny_backbone_factory(family), WITH_SYSTEM)
    features = tokenize_sft(backbone, SFTExample("Q: 3 plus 1? A:", " 4"), 0, 512)
    prompt = rendered_ids(backbone, WITH_SYSTEM.render(backbone.tokenizer, "Q: 3 plus 1? A:"))
    answer = encode_answer(backbone, " 4", 512)
    assert features["input_ids"] == prompt + answer  # one BOS (gemma's is the template's <|im_start|>)
    assert features["labels"] == [IGNORE_INDEX] * len(prompt) + answer


def test_evaluation_feeds_the_formatted_prompts(tmp_path, tiny_backbone):
    task = get_task("files", **split_files(tmp_path, qa_rows(), template="Q: {q} A:", columns={"answer": "a"}, max_new_tokens=2, chat_template=True))
    backbone = formatted(tiny_backbone, task.prompt_format)
    seen: list[list[int]] = []
    hook = backbone.model.get_input_embeddings().register_forward_hook(lambda _m, args, _o: seen.append(args[0][0].tolist()))
    try:
        task.evaluate(backbone, "test", out_dir=tmp_path / "eval", limit=1, batch_size=1)
    finally:
        hook.remove()
    expected = rendered_ids(backbone, ON.render(backbone.tokenizer, task.examples("test")[0].prompt))
    assert seen[0] == expected
    assert (tmp_path / "eval" / "predictions.jsonl").is_file()


def test_generation_with_a_primer_renders_primer_and_prompt_as_one_turn(tiny_backbone):
    backbone = formatted(tiny_backbone, WITH_SYSTEM)
    prefix_ids, token_lists = prompt_token_ids(backbone, ["Q: 5 plus 1? A:"], PRIMER)
    assert prefix_ids == []
    assert token_lists == [rendered_ids(backbone, WITH_SYSTEM.render(backbone.tokenizer, PRIMER + "Q: 5 plus 1? A:"))]


def test_the_shared_prefix_cache_stays_exact_with_the_format_on(tiny_backbone):
    backbone = formatted(tiny_backbone, WITH_SYSTEM)
    contexts = [PRIMER + f"Q: {n} plus 1? A:" for n in (3, 7, 11)]
    shared = shared_prefix_of(backbone, contexts)
    head = rendered_ids(backbone, WITH_SYSTEM.render(backbone.tokenizer, PRIMER))
    assert len(shared.ids) > len(rendered_ids(backbone, "<|im_start|>system\nAnswer with a number.<|im_end|>\n"))
    for context in contexts:
        plan = plan_scoring(backbone, context, [" 4", " 8", " 12"])
        assert plan.context_ids[: len(shared.ids)] == shared.ids and shared.covers(plan.context_ids)
        assert plan.context_ids[:10] == head[:10]
        torch.testing.assert_close(torch.tensor(score_cached(backbone, plan, shared=shared)), torch.tensor(score_naive(backbone, plan)), atol=1e-4, rtol=0)


# ---------------------------------------------------------------- adapter record and server


def save_tiny_adapter(backbone: Backbone, folder, prompt_format: PromptFormat = PromptFormat()):
    generator = torch.Generator().manual_seed(0)
    intervention = HeadIntervention(backbone.geometry, ("offset",), heads=[(0, 1)], init_std=0.5, generator=generator)
    return save_adapter(intervention, folder, base_model=backbone.name, model_type="llama", prompt_format=prompt_format)


def test_adapter_config_records_the_format_and_old_configs_load_as_off(tmp_path, tiny_backbone):
    assert read_adapter_config(save_tiny_adapter(tiny_backbone, tmp_path / "on", WITH_SYSTEM)).prompt == WITH_SYSTEM
    off = save_tiny_adapter(tiny_backbone, tmp_path / "off")
    assert "prompt_format" not in json.loads((off / CONFIG_NAME).read_text())  # the file of today, unchanged
    assert read_adapter_config(off).prompt == PromptFormat()
    raw = json.loads((off / CONFIG_NAME).read_text())
    (off / CONFIG_NAME).write_text(json.dumps(raw | {"prompt_format": {"system_prompt": "x"}}))
    with pytest.raises(ConfigError, match=r"system_prompt needs task.options.chat_template"):
        read_adapter_config(off)


def test_the_server_renders_completions_and_chats_in_the_adapters_format(tmp_path, tiny_backbone):
    paths = {"chat": str(save_tiny_adapter(tiny_backbone, tmp_path / "chat", WITH_SYSTEM)), "plain": str(save_tiny_adapter(tiny_backbone, tmp_path / "plain"))}
    app = make_app(tiny_backbone, [f"{name}={path}" for name, path in paths.items()], "tiny")
    prompt = "Q: 3 plus 1? A:"
    rendered = WITH_SYSTEM.render(tiny_backbone.tokenizer, prompt)
    with running_server(app) as url:
        api = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=30)
        chat = api.completions.create(model="chat", prompt=prompt, max_tokens=1, temperature=0, echo=True)
        assert chat.usage.prompt_tokens == len(rendered_ids(tiny_backbone, rendered))
        assert chat.choices[0].text.startswith(rendered)
        for model in ("plain", "tiny"):
            reply = api.completions.create(model=model, prompt=prompt, max_tokens=1, temperature=0)
            assert reply.usage.prompt_tokens == len(tiny_backbone.encode(prompt))
        messages = [{"role": "user", "content": prompt}]
        with_system = api.chat.completions.create(model="chat", messages=messages, max_tokens=1, temperature=0)
        assert with_system.usage.prompt_tokens == len(rendered_ids(tiny_backbone, rendered))
        default = api.chat.completions.create(model="plain", messages=messages, max_tokens=1, temperature=0)
        assert default.usage.prompt_tokens == len(rendered_ids(tiny_backbone, ON.render(tiny_backbone.tokenizer, prompt)))


def test_step_2_records_the_backbones_format_in_its_adapter(tmp_path, tiny_backbone):
    from lofit.training.config import TuningConfig
    from lofit.training.tuning import ADAPTER_DIR, BiasTuningModule

    for name, prompt_format in (("on", WITH_SYSTEM), ("off", PromptFormat())):
        module = BiasTuningModule(formatted(tiny_backbone, prompt_format), "sft", TuningConfig(heads="unused.json", top_k=1), tmp_path, top_heads=[((0, 1), 1.0)])
        module.export(tmp_path / name)
        assert read_adapter_config(tmp_path / name / ADAPTER_DIR).prompt == prompt_format

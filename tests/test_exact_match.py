"""Answer parsing and matching on crafted generations; greedy generation with left padding."""

from __future__ import annotations

import string

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lofit.evaluation.exact_match import (
    AnswerParser,
    ExactMatch,
    is_match,
    lower_strip,
    normalize_open_qa,
    parse_clutrr,
    parse_first_line,
    parse_mquake,
)
from lofit.evaluation.generate import decode_continuation, generate_ids, greedy_generate, prompt_token_ids

MQUAKE_PROMPT = "Q: Imagine that John Krasinski is a citizen of Sweden. Which country is the spouse of Emily Blunt a citizen of? A:"
CLUTRR_PROMPT = "... how is Roy related to Cleo? Answer: Roy is Cleo 's\n"
answers = st.text(alphabet=string.ascii_letters + " -", min_size=1, max_size=20).filter(lambda s: s.strip())
spaces = st.text(alphabet=" \t", max_size=3)


@pytest.mark.parametrize(
    "continuation, expected",
    [
        ("Sweden", "sweden"),
        (" Sweden", "sweden"),  # leading space: stripped (the reference would mark it wrong)
        (" Sweden\nQ: Imagine that", "sweden"),
        (" Sweden.\n", "sweden."),
        (" I think so. A: Kingdom of Sweden\nQ:", "kingdom of sweden"),  # text after the LAST "A:"
        ("\nSweden", ""),
    ],
)
def test_parse_mquake(continuation, expected):
    assert parse_mquake(MQUAKE_PROMPT, continuation) == expected


@given(answer=answers, before=spaces, after=spaces, tail=st.sampled_from(["", "\n", "\nQ: next question"]))
def test_mquake_answer_matches_alias_whatever_the_surrounding_whitespace(answer, before, after, tail):
    prediction = parse_mquake(MQUAKE_PROMPT, before + answer + after + tail)
    assert is_match(prediction, ["Placeholder", answer.upper()], lower_strip)


@pytest.mark.parametrize(
    "continuation, expected",
    [("grandfather", "grandfather"), (" Grandfather.", "grandfather"), ("grandfather. Roy is old.", "grandfather"), ("step-mother", "step-mother")],
)
def test_parse_clutrr(continuation, expected):
    assert parse_clutrr(CLUTRR_PROMPT, continuation) == expected


@given(relation=st.sampled_from(["grandfather", "aunt", "son-in-law", "niece"]), before=spaces, rest=st.text(max_size=15))
def test_clutrr_reads_up_to_the_first_period(relation, before, rest):
    assert parse_clutrr(CLUTRR_PROMPT, f"{before}{relation.title()}.{rest}") == relation


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The Beatles", "beatles"),
        ("  an   Apple, a day. ", "apple day"),
        ("U.S.A.", "usa"),
        ("Theatre", "theatre"),  # "the" only as a whole word
    ],
)
def test_normalize_open_qa(text, expected):
    assert normalize_open_qa(text) == expected


@given(
    alias=answers,
    article=st.sampled_from(["", "the ", "a ", "An "]),
    punctuation=st.sampled_from(["", ".", "!", "'"]),
    before=spaces,
)
def test_open_qa_alias_match_ignores_case_articles_punctuation(alias, article, punctuation, before):
    generation = f"{before}{article}{alias.upper()}{punctuation}\nQuestion: next"
    assert is_match(parse_first_line("Question: q\nAnswer:", generation), ["zzz-other", alias], normalize_open_qa)


def test_wrong_answer_does_not_match():
    assert not is_match("Norway", ["Sweden", "Kingdom of Sweden"], lower_strip)
    assert not is_match("Swedenborg", ["Sweden"], normalize_open_qa)


def test_exact_match_metric():
    metric = ExactMatch(normalize_open_qa)
    metric.update(["the Beatles", "Rolling Stones"], [["Beatles"], ["The Who"]])
    metric.update(["Yuri Gagarin."], [["Gagarin", "Yuri Gagarin"]])
    assert float(metric.compute()) == pytest.approx(2 / 3)


def test_left_padded_batch_generation_matches_one_by_one(tiny_backbone):
    prompts = ["Q: What is the capital of France? A:", "Hi", "Question: who wrote Hamlet, the long play?\nAnswer:"]
    batched = greedy_generate(tiny_backbone, prompts, max_new_tokens=5, batch_size=3)
    single = [greedy_generate(tiny_backbone, [p], max_new_tokens=5, batch_size=1)[0] for p in prompts]
    assert batched == single
    ids = tiny_backbone.encode(prompts[1])
    with torch.no_grad():
        first = int(tiny_backbone.model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
    assert batched[1].startswith(tiny_backbone.tokenizer.decode([first]))


@pytest.mark.parametrize("batch_size", [0, -1, -16])
def test_a_non_positive_batch_size_is_refused_not_an_empty_generation(tiny_backbone, batch_size):
    with pytest.raises(ValueError, match=f"batch_size must be a positive integer, got {batch_size}"):
        greedy_generate(tiny_backbone, ["Hi"], max_new_tokens=2, batch_size=batch_size)



SHOTS_PREFIX = "Question: What type of animal is a dik-dik?\nAnswer: Antelope\n\nQuestion: Garron?\nAnswer: Horse\n\n"
QUESTIONS = [
    "Question: who?\nAnswer:",
    "Question: who wrote Hamlet, the long play about a Danish prince?\nAnswer:",
    "Question: which river flows through Paris?\nAnswer:",
]


def test_prefix_and_prompt_are_tokenized_apart_so_the_seam_is_the_same_in_every_path(tiny_backbone):
    # SmolLM2 merges "\n\n" into one token alone but splits it before "Question" in one string:
    # the model input is always encode(prefix) + encode(prompt), cached or not
    prefix_ids, token_lists = prompt_token_ids(tiny_backbone, QUESTIONS, SHOTS_PREFIX)
    assert prefix_ids == tiny_backbone.encode(SHOTS_PREFIX)
    assert token_lists == [tiny_backbone.encode(q, add_bos=False) for q in QUESTIONS]
    assert prefix_ids + token_lists[0] != tiny_backbone.encode(SHOTS_PREFIX + QUESTIONS[0])
    assert prompt_token_ids(tiny_backbone, QUESTIONS) == ([], [tiny_backbone.encode(q) for q in QUESTIONS])


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_generation_on_the_cached_prefix_equals_generation_on_the_whole_prompt(tiny_backbone_factory, family, batch_size):
    # initializer_range 0.2: a tiny model whose greedy tokens vary, so a wrong position or mask shows
    backbone = tiny_backbone_factory(family, initializer_range=0.2)
    prefix_ids, token_lists = prompt_token_ids(backbone, QUESTIONS, SHOTS_PREFIX)
    assert len({len(ids) for ids in token_lists}) == 3  # rows padded between prefix and question
    cached = generate_ids(backbone, token_lists, 8, batch_size, prefix_ids)
    whole = [generate_ids(backbone, [prefix_ids + ids], 8, 1)[0] for ids in token_lists]
    assert cached == whole
    assert len({tuple(ids) for ids in cached}) == 3
    texts = greedy_generate(backbone, QUESTIONS, 8, batch_size, prefix=SHOTS_PREFIX)
    assert texts == [decode_continuation(backbone, ids, new) for ids, new in zip(token_lists, whole)]

# ---- early stop: "final" must mean no further text changes the prediction -----------------------

FINAL_PARSERS = [(parse_clutrr, CLUTRR_PROMPT), (parse_first_line, "Question: who?\nAnswer:")]
# Characters the rules and parsers react to, plus Unicode whitespace that str.strip() removes.
texts = st.text(alphabet=st.sampled_from(list("ab .\n\t\r:A'") + ["\u2003", "\x0b", "\ufffd"]), max_size=12)


@pytest.mark.parametrize("parser, prompt", FINAL_PARSERS)
@given(prefix=texts, extension=texts)
def test_a_final_text_parses_like_every_extension_of_it(parser, prompt, prefix, extension):
    if parser.is_final(prefix):
        assert parser(prompt, prefix + extension) == parser(prompt, prefix)


@pytest.mark.parametrize(
    "parser, final, not_final",
    [(parse_clutrr, " Grandfather.", " Grandfather"), (parse_first_line, " Paris\n", "\n Paris ")],
)
def test_the_stop_rule_fires_once_the_answer_is_closed(parser, final, not_final):
    assert parser.is_final(final) and not parser.is_final(not_final)


def test_mquake_is_never_final_because_a_later_answer_replaces_the_first():
    assert parse_mquake(MQUAKE_PROMPT, " Paris\nQ: x A: London") == "london"
    assert parse_mquake.is_final is None


@pytest.fixture(scope="module")
def token_pool(tokenizer) -> list[int]:
    """Ids of the stop characters, whitespace and multi-byte pieces (partial UTF-8 on their own)."""
    pieces = [".", " .", "\n", " \n", "\n\n", " ", "A", ":", " A:", "'s", " father", "é", "日本", "🙂", "\u2003"]
    return sorted({token for piece in pieces for token in tokenizer.encode(piece, add_special_tokens=False)})


@pytest.mark.parametrize("parser, prompt", FINAL_PARSERS)
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200)
@given(data=st.data())
def test_final_on_decoded_token_prefix_holds_for_every_token_extension(tiny_backbone, token_pool, parser, prompt, data):
    """The rule sees decode_continuation of a token prefix; partial bytes or spaces must not fool it."""
    tokens = st.lists(st.sampled_from(token_pool) | st.integers(0, len(tiny_backbone.tokenizer) - 1), max_size=8)
    prefix, extension = data.draw(tokens), data.draw(tokens)
    prompt_ids = tiny_backbone.encode(prompt)
    text = decode_continuation(tiny_backbone, prompt_ids, prefix)
    if parser.is_final(text):
        assert parser(prompt, decode_continuation(tiny_backbone, prompt_ids, prefix + extension)) == parser(prompt, text)


def _first_chars(count: int) -> AnswerParser:
    """An exact rule that the tiny random model reaches at different steps per row: the first characters."""
    return AnswerParser(lambda prompt, continuation: continuation[:count], lambda continuation: len(continuation) >= count)


def _forward_calls(backbone, run) -> tuple[list[str], int]:
    calls = []
    handle = backbone.model.register_forward_hook(lambda *args: calls.append(1))
    try:
        return run(), len(calls)
    finally:
        handle.remove()


@pytest.mark.parametrize("parser", [_first_chars(10), parse_clutrr, parse_first_line])
def test_early_stop_gives_the_predictions_of_a_full_generation(tiny_backbone, parser):
    prompts = ["Hi", "The capital of France is", "a b c d e f", "Q: who? A:", "x", "Answer: Roy is Cleo 's\n"]
    full = greedy_generate(tiny_backbone, prompts, max_new_tokens=8, batch_size=2)
    early = greedy_generate(tiny_backbone, prompts, max_new_tokens=8, batch_size=2, is_final=parser.is_final)
    assert [parser(p, c) for p, c in zip(prompts, early)] == [parser(p, c) for p, c in zip(prompts, full)]
    assert all(whole.startswith(cut) for cut, whole in zip(early, full))


def test_a_batch_stops_once_every_row_is_final_and_each_row_is_cut_there(tiny_backbone):
    prompts = ["Hi", "x"]  # the tiny model continues "against…" and "ocab…": 10 characters within 3 tokens
    rule = _first_chars(10)
    full, full_calls = _forward_calls(tiny_backbone, lambda: greedy_generate(tiny_backbone, prompts, max_new_tokens=8))
    early, early_calls = _forward_calls(
        tiny_backbone, lambda: greedy_generate(tiny_backbone, prompts, max_new_tokens=8, is_final=rule.is_final)
    )
    assert early_calls < full_calls
    for cut, whole in zip(early, full):
        assert rule.is_final(cut) and whole.startswith(cut) and len(cut) < len(whole)

"""Exact match on greedy generations: answer parsing per task, normalisation, EM accuracy.

Whitespace rule (decided here, documented once): every parsed prediction and every target is
stripped of surrounding whitespace. The reference does not strip MQuAKE predictions, which marks
" Sweden" wrong for "Sweden"; whether a space appears there depends on the tokenizer's decoding,
not on the model's answer.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lofit.evaluation import check_examples, write_results
from lofit.evaluation.generate import greedy_generate
from lofit.evaluation.multiple_choice import QuestionMean

if TYPE_CHECKING:
    from lofit.backbone import Backbone

Normalizer = Callable[[str], str]


@dataclass(frozen=True)
class AnswerParser:
    """A task's answer rule, called as `parser(prompt, continuation) -> prediction`.

    `is_final(continuation)` is True once no further text can change the prediction, so generation
    may stop there (None: only EOS or the token budget ends it). It must be exact: whenever it
    holds for a text, `parse` gives the same prediction for every extension of that text.
    """

    parse: Callable[[str, str], str]
    is_final: Callable[[str], bool] | None = None

    def __call__(self, prompt: str, continuation: str) -> str:
        return self.parse(prompt, continuation)


def _mquake_answer(prompt: str, continuation: str) -> str:
    """Text after the last "A:" of prompt+continuation up to the first newline, stripped, lower-cased.

    The reference decodes prompt and generation together; the prompt ends with "A:", so a
    continuation without its own "A:" is read from its start.
    """
    return (prompt + continuation).split("A:")[-1].split("\n")[0].strip().lower()


# Never final: a later "A:" (e.g. "Paris\nQ: x A: London") replaces the answer, so MQuAKE keeps
# generating to EOS or the token budget, as the reference does.
parse_mquake = AnswerParser(_mquake_answer)


def _clutrr_relation(prompt: str, continuation: str) -> str:
    """Generated relation up to the first ".", stripped, lower-cased.

    The reference splits the decoded prompt+generation at "'s\\n"; the test prompt already ends
    with "'s\\n", so that text is exactly the continuation.
    """
    return continuation.split(".")[0].strip().lower()


def _has_period(continuation: str) -> bool:
    return "." in continuation


parse_clutrr = AnswerParser(_clutrr_relation, _has_period)


def _first_line(prompt: str, continuation: str) -> str:
    """Open-domain QA answer: the continuation's first line, stripped."""
    return continuation.strip().split("\n")[0].strip()


def line_ended(continuation: str) -> bool:
    """A newline after the first non-whitespace character ends the first line for good."""
    return "\n" in continuation.lstrip()


parse_first_line = AnswerParser(_first_line, line_ended)


def lower_strip(text: str) -> str:
    return text.strip().lower()


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_open_qa(text: str) -> str:
    """TriviaQA/NQ normalisation: lower, drop punctuation and articles, collapse whitespace."""
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def is_match(prediction: str, targets: Sequence[str], normalize: Normalizer) -> bool:
    """True iff the normalised prediction equals one of the normalised targets (aliases)."""
    return normalize(prediction) in {normalize(target) for target in targets}


class ExactMatch(QuestionMean):
    """EM accuracy over (prediction, alias list) pairs; sync-safe sum/count states."""

    def __init__(self, normalize: Normalizer = lower_strip, **kwargs) -> None:
        super().__init__(**kwargs)
        self.normalize = normalize

    def update(self, predictions: Sequence[str], targets: Sequence[Sequence[str]]) -> None:
        for prediction, aliases in zip(predictions, targets, strict=True):
            self._add(float(is_match(prediction, aliases, self.normalize)))


@dataclass(frozen=True)
class GenerationItem:
    """One test example of a generation task: the prompt and its accepted answers."""

    prompt: str
    targets: tuple[str, ...]


def evaluate_exact_match(
    backbone: Backbone,
    items: Sequence[GenerationItem],
    parse: AnswerParser,
    normalize: Normalizer,
    out_dir: str | Path | None,
    batch_size: int = 16,
    max_new_tokens: int = 16,
    prefix: str = "",
) -> dict[str, float]:
    """Greedy-generate after `prefix` (few-shot examples shared by all items, encoded once), parse,
    match; write predictions.jsonl + summary.json; return the summary. Rows record each item's own
    prompt, not the shared prefix."""
    check_examples(items)
    prompts = [item.prompt for item in items]
    continuations = greedy_generate(backbone, prompts, max_new_tokens, batch_size, prefix, is_final=parse.is_final)
    metric = ExactMatch(normalize)
    rows = []
    for item, continuation in zip(items, continuations):
        prediction = parse(item.prompt, continuation)
        correct = is_match(prediction, item.targets, normalize)
        metric.update([prediction], [item.targets])
        rows.append(
            {
                "prompt": item.prompt,
                "generation": continuation,
                "prediction": prediction,
                "targets": list(item.targets),
                "correct": correct,
            }
        )
    summary = {"exact_match": float(metric.compute()), "num_examples": len(items)}
    write_results(out_dir, rows, summary)
    return summary

"""Log-likelihood multiple choice: continuation scoring (cached prefix or naive) and MC metrics.

Scoring a candidate = summed log-probs of its continuation tokens given a shared context. The
token split is defined once (`plan_scoring`) and both scorers consume the same plan, so the
cached-prefix scorer (context encoded once, candidates batched on its KV cache) and the naive
scorer (one forward of context + candidate per candidate) see identical token sequences.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torchmetrics import Metric
from tqdm.auto import tqdm

from lofit.evaluation import check_batch_size, check_examples, write_results

if TYPE_CHECKING:
    from lofit.backbone import Backbone


@dataclass(frozen=True)
class ScoringPlan:
    """Token ids of a shared context and of each candidate continuation.

    `skip[i]` leading tokens of continuation i are fed to the model but not scored (TruthfulQA's
    "\\nA:" prefix).
    """

    context_ids: list[int]
    continuation_ids: list[list[int]]
    skip: list[int]


def continuation_token_ids(backbone: Backbone, context: str, context_ids: list[int], continuation: str) -> list[int]:
    """Tokens of `continuation` as they follow `context`.

    Normally the tail of encode(context + continuation) after the context tokens, which is how the
    reference splits them (the context in the backbone's prompt format, the continuation after it). If the tokenizer merges text across the boundary (so the context tokens
    are not a prefix), the continuation is encoded on its own so the context stays shared.
    """
    full = backbone.encode_prompt(context, continuation)
    if full[: len(context_ids)] == context_ids:
        return full[len(context_ids) :]
    return backbone.encode(continuation, add_bos=False)


def _tokens_covering(backbone: Backbone, ids: list[int], prefix: str) -> int:
    """How many leading tokens of `ids` decode to at most `prefix` (the tokens not scored)."""
    count = 0
    while count < len(ids) and len(backbone.tokenizer.decode(ids[: count + 1])) <= len(prefix):
        count += 1
    return count


def plan_scoring(backbone: Backbone, context: str, continuations: Sequence[str], skip_prefix: str = "") -> ScoringPlan:
    """Tokenize a context once and each continuation after it; every continuation needs a token."""
    context_ids = backbone.encode_prompt(context)
    token_lists, skips = [], []
    for continuation in continuations:
        if not continuation.startswith(skip_prefix):
            raise ValueError(f"continuation {continuation!r} does not start with the unscored prefix {skip_prefix!r}")
        ids = continuation_token_ids(backbone, context, context_ids, continuation)
        skip = _tokens_covering(backbone, ids, skip_prefix) if skip_prefix else 0
        if skip >= len(ids):
            raise ValueError(f"continuation {continuation!r} has no tokens to score after {skip_prefix!r}")
        token_lists.append(ids)
        skips.append(skip)
    return ScoringPlan(context_ids, token_lists, skips)


def _token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) per position, in float64 so long sums stay comparable across scorers."""
    logits = logits.double()
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def _device(backbone: Backbone) -> torch.device:
    return next(backbone.model.parameters()).device


@torch.no_grad()
def score_naive(backbone: Backbone, plan: ScoringPlan) -> list[float]:
    """One forward of context + continuation per candidate (the reference's way, slow)."""
    device, context_len = _device(backbone), len(plan.context_ids)
    scores = []
    for ids, skip in zip(plan.continuation_ids, plan.skip):
        # the last continuation token is only a target, never an input
        inputs = torch.tensor([plan.context_ids + ids[:-1]], device=device)
        logits = backbone.model(input_ids=inputs).logits[0, context_len - 1 :]
        logprobs = _token_logprobs(logits, torch.tensor(ids, device=device))
        scores.append(float(logprobs[skip:].sum()))
    return scores


class SharedPrefix:
    """The KV cache of a token prefix that many contexts start with, encoded once.

    TruthfulQA's instruction + 6-shot primer (~280 tokens) opens every question's context, so the
    per-question forward only covers the question itself. The prefix is found on token ids (the
    longest common prefix of all contexts), so the tokens fed are exactly those of the full context.
    """

    def __init__(self, backbone: Backbone, contexts_ids: Sequence[Sequence[int]]) -> None:
        shortest = min(len(ids) for ids in contexts_ids)
        length = 0
        first = contexts_ids[0]
        while length < shortest - 1 and all(ids[length] == first[length] for ids in contexts_ids):
            length += 1
        self.ids = list(first[:length])
        self.cache = None
        if self.ids:
            with torch.no_grad():
                inputs = torch.tensor([self.ids], device=_device(backbone))
                self.cache = backbone.model(input_ids=inputs, use_cache=True).past_key_values

    def covers(self, context_ids: Sequence[int]) -> bool:
        return bool(self.ids) and len(context_ids) > len(self.ids) and list(context_ids[: len(self.ids)]) == self.ids


@torch.no_grad()
def _encode_context(backbone: Backbone, context_ids: list[int], shared: SharedPrefix | None):
    """Run the context (from the shared prefix's cache when it applies): last logits + KV cache."""
    device = _device(backbone)
    if shared is not None and shared.covers(context_ids):
        rest = torch.tensor([context_ids[len(shared.ids) :]], device=device)
        out = backbone.model(input_ids=rest, past_key_values=copy.deepcopy(shared.cache), use_cache=True)
    else:
        out = backbone.model(input_ids=torch.tensor([context_ids], device=device), use_cache=True)
    return out.logits[0, -1], out.past_key_values


@torch.no_grad()
def score_cached(
    backbone: Backbone, plan: ScoringPlan, batch_size: int = 32, shared: SharedPrefix | None = None
) -> list[float]:
    """Encode the context once, then score candidates in batches on copies of its KV cache."""
    check_batch_size(batch_size)
    model, device = backbone.model, _device(backbone)
    first_token_logits, context_cache = _encode_context(backbone, plan.context_ids, shared)
    pad_id = backbone.tokenizer.pad_token_id
    scores: list[float] = []
    for start in range(0, len(plan.continuation_ids), batch_size):
        chunk = plan.continuation_ids[start : start + batch_size]
        skips = plan.skip[start : start + batch_size]
        width = max(len(ids) for ids in chunk) - 1  # inputs: every continuation token but the last
        if width > 0:
            inputs = torch.full((len(chunk), width), pad_id, dtype=torch.long, device=device)
            mask = torch.zeros((len(chunk), len(plan.context_ids) + width), dtype=torch.long, device=device)
            mask[:, : len(plan.context_ids)] = 1
            for row, ids in enumerate(chunk):
                inputs[row, : len(ids) - 1] = torch.tensor(ids[:-1], device=device)
                mask[row, len(plan.context_ids) : len(plan.context_ids) + len(ids) - 1] = 1
            cache = copy.deepcopy(context_cache)
            cache.batch_repeat_interleave(len(chunk))
            chunk_logits = model(input_ids=inputs, attention_mask=mask, past_key_values=cache, use_cache=True).logits
        for row, (ids, skip) in enumerate(zip(chunk, skips)):
            logits = first_token_logits.unsqueeze(0)
            if len(ids) > 1:
                logits = torch.cat([logits, chunk_logits[row, : len(ids) - 1]])
            logprobs = _token_logprobs(logits, torch.tensor(ids, device=device))
            scores.append(float(logprobs[skip:].sum()))
    return scores


def score_continuations(
    backbone: Backbone,
    context: str,
    continuations: Sequence[str],
    skip_prefix: str = "",
    batch_size: int = 32,
    shared: SharedPrefix | None = None,
) -> list[float]:
    """Summed log-probs of each continuation after `context` (cached-prefix scorer)."""
    return score_cached(backbone, plan_scoring(backbone, context, continuations, skip_prefix), batch_size, shared)


def shared_prefix_of(backbone: Backbone, contexts: Sequence[str]) -> SharedPrefix:
    """Encode once the token prefix that all `contexts` share (instructions, few-shot primers)."""
    return SharedPrefix(backbone, [backbone.encode_prompt(context) for context in contexts])


@dataclass(frozen=True)
class MCScores:
    """Per-question log-prob scores: the best answer's, all true answers' (best included), false ones'."""

    best: float
    true: tuple[float, ...]
    false: tuple[float, ...]


def mc1(scores: MCScores) -> float:
    """1 if the best answer outscores every false answer."""
    return float(scores.best > max(scores.false))


def mc2(scores: MCScores) -> float:
    """Normalized probability mass on true answers: Σexp(true) / (Σexp(true) + Σexp(false))."""
    true_mass = torch.logsumexp(torch.tensor(scores.true, dtype=torch.float64), 0)
    all_mass = torch.logsumexp(torch.tensor(scores.true + scores.false, dtype=torch.float64), 0)
    return math.exp(float(true_mass - all_mass))


def mc3(scores: MCScores) -> float:
    """Share of true answers that outscore every false answer."""
    top_false = max(scores.false)
    return sum(score > top_false for score in scores.true) / len(scores.true)


class QuestionMean(Metric):
    """Mean of per-question values; sum and count states reduce by sum across processes (DDP)."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def _add(self, value: float) -> None:
        self.total += value
        self.count += 1

    def compute(self) -> torch.Tensor:
        return self.total / self.count


class _TruthfulQAMetric(QuestionMean):
    question_value: Callable[[MCScores], float]

    def update(self, questions: Sequence[MCScores]) -> None:
        for scores in questions:
            self._add(self.question_value(scores))


class MC1(_TruthfulQAMetric):
    question_value = staticmethod(mc1)


class MC2(_TruthfulQAMetric):
    question_value = staticmethod(mc2)


class MC3(_TruthfulQAMetric):
    question_value = staticmethod(mc3)


class ChoiceAccuracy(QuestionMean):
    """Share of questions whose highest-scoring choice is the gold one (MMLU)."""

    def update(self, choice_scores: Sequence[Sequence[float]], gold: Sequence[int]) -> None:
        for scores, answer in zip(choice_scores, gold, strict=True):
            self._add(float(argmax(scores) == answer))


def argmax(values: Sequence[float]) -> int:
    """Index of the largest value (the first on ties)."""
    return max(range(len(values)), key=values.__getitem__)


@dataclass(frozen=True)
class TruthfulQAQuestion:
    """A TruthfulQA MC item: the shared context and prepared answers; `true[0]` is the best answer."""

    context: str
    true: tuple[str, ...]
    false: tuple[str, ...]


ANSWER_PREFIX = "\nA: "


def evaluate_truthfulqa_mc(
    backbone: Backbone, questions: Sequence[TruthfulQAQuestion], out_dir: str | Path | None, batch_size: int = 32
) -> dict[str, float]:
    """MC1/MC2/MC3 with each answer scored as "\\nA: " + answer, not counting the "\\nA:" tokens."""
    check_examples(questions, "questions")
    check_batch_size(batch_size)
    metrics = {"mc1": MC1(), "mc2": MC2(), "mc3": MC3()}
    rows = []
    shared = shared_prefix_of(backbone, [question.context for question in questions])
    for question in tqdm(questions, desc="TruthfulQA MC", unit="question", mininterval=5):
        answers = question.true + question.false
        raw = score_continuations(
            backbone, question.context, [ANSWER_PREFIX + a for a in answers], ANSWER_PREFIX.rstrip(" "), batch_size, shared
        )
        true_count = len(question.true)
        scores = MCScores(best=raw[0], true=tuple(raw[:true_count]), false=tuple(raw[true_count:]))
        for metric in metrics.values():
            metric.update([scores])
        rows.append(
            {
                "prompt": question.context,
                "true_answers": list(question.true),
                "false_answers": list(question.false),
                "scores_true": list(scores.true),
                "scores_false": list(scores.false),
                "mc1": mc1(scores),
                "mc2": mc2(scores),
                "mc3": mc3(scores),
            }
        )
    summary = {name: float(metric.compute()) for name, metric in metrics.items()}
    summary["num_examples"] = len(rows)
    write_results(out_dir, rows, summary)
    return summary


@dataclass(frozen=True)
class ChoiceQuestion:
    """A lettered multiple-choice item: prompt, continuations to score (e.g. " A"), gold index.

    Questions of one `group` (an MMLU subject) share a prompt prefix (header and shots) whose KV
    cache is encoded once for the group.
    """

    prompt: str
    choices: tuple[str, ...]
    gold: int
    group: str = ""


def group_prefixes(backbone: Backbone, questions: Sequence[ChoiceQuestion]) -> Iterator[tuple[list[int], SharedPrefix]]:
    """(indices of a group's questions, the group's shared prefix), one group at a time so that
    only one prefix cache is alive; groups in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for index, question in enumerate(questions):
        groups.setdefault(question.group, []).append(index)
    for indices in groups.values():
        yield indices, shared_prefix_of(backbone, [questions[index].prompt for index in indices])


def evaluate_choice_accuracy(
    backbone: Backbone, questions: Sequence[ChoiceQuestion], out_dir: str | Path | None, batch_size: int = 32
) -> dict[str, float]:
    """Accuracy of picking the highest log-likelihood choice; per-question rows and summary."""
    check_examples(questions, "questions")
    check_batch_size(batch_size)
    metric = ChoiceAccuracy()
    all_scores: dict[int, list[float]] = {}
    progress = tqdm(total=len(questions), desc="multiple choice", unit="question", mininterval=5)
    for indices, shared in group_prefixes(backbone, questions):
        for index in indices:
            question = questions[index]
            all_scores[index] = score_continuations(backbone, question.prompt, question.choices, batch_size=batch_size, shared=shared)
            progress.update()
    progress.close()
    rows = []
    for index, question in enumerate(questions):
        scores = all_scores[index]
        metric.update([scores], [question.gold])
        predicted = argmax(scores)
        rows.append(
            {
                "prompt": question.prompt,
                "prediction": question.choices[predicted].strip(),
                "target": question.choices[question.gold].strip(),
                "scores": scores,
                "correct": predicted == question.gold,
            }
        )
    summary = {"accuracy": float(metric.compute()), "num_examples": len(rows)}
    write_results(out_dir, rows, summary)
    return summary

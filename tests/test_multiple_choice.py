"""MC metrics on hand-made scores; cached-prefix scoring equals naive scoring on tiny models."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lofit.evaluation import SUMMARY_FILE, write_results
from lofit.evaluation.multiple_choice import (
    shared_prefix_of,
    MC1,
    MC2,
    MC3,
    ChoiceAccuracy,
    ChoiceQuestion,
    MCScores,
    evaluate_choice_accuracy,
    evaluate_truthfulqa_mc,
    group_prefixes,
    mc1,
    mc2,
    mc3,
    plan_scoring,
    score_cached,
    score_continuations,
    score_naive,
)

# Question 1: best -1 beats the top false -1.5; of the true answers only -1 does.
#   MC2 = (e^-1 + e^-2) / (e^-1 + e^-2 + e^-1.5 + e^-3) = 0.50321472 / 0.77613195 = 0.64836233
# Question 2: best -2 loses to false -1.  MC2 = e^-2 / (e^-2 + e^-1) = 1 / (1 + e) = 0.26894142
Q1 = MCScores(best=-1.0, true=(-1.0, -2.0), false=(-1.5, -3.0))
Q2 = MCScores(best=-2.0, true=(-2.0,), false=(-1.0,))


def test_per_question_values_match_hand_computation():
    assert (mc1(Q1), mc1(Q2)) == (1.0, 0.0)
    assert mc2(Q1) == pytest.approx(0.64836233, abs=1e-8)
    assert mc2(Q2) == pytest.approx(0.26894142, abs=1e-8)
    assert (mc3(Q1), mc3(Q2)) == (0.5, 0.0)


def test_mc2_is_stable_for_very_negative_scores():
    shifted = MCScores(best=-1001.0, true=(-1001.0, -1002.0), false=(-1001.5, -1003.0))
    assert mc2(shifted) == pytest.approx(0.64836233, abs=1e-8)


def test_tie_with_a_false_answer_is_not_an_mc1_hit():
    assert mc1(MCScores(best=-1.0, true=(-1.0,), false=(-1.0,))) == 0.0


def test_metrics_average_over_questions_and_accumulate_updates():
    metrics = {"mc1": MC1(), "mc2": MC2(), "mc3": MC3()}
    for metric in metrics.values():
        metric.update([Q1])
        metric.update([Q2])
    assert float(metrics["mc1"].compute()) == 0.5
    assert float(metrics["mc2"].compute()) == pytest.approx((0.64836233 + 0.26894142) / 2, abs=1e-8)
    assert float(metrics["mc3"].compute()) == 0.25


def test_choice_accuracy():
    metric = ChoiceAccuracy()
    metric.update([[-3.0, -0.5, -2.0, -9.0], [-1.0, -1.0, -4.0, -2.0]], [1, 2])
    assert float(metric.compute()) == 0.5


def test_answer_prefix_tokens_are_fed_but_not_scored(tiny_backbone):
    context = "Q: Can pigs fly?"
    plan = plan_scoring(tiny_backbone, context, ["\nA: No, pigs cannot fly.", "\nA: Yes."], skip_prefix="\nA:")
    assert plan.skip == [3, 3]  # "Ċ", "A", ":" for the SmolLM2 tokenizer
    assert plan.context_ids + plan.continuation_ids[0] == tiny_backbone.encode(context + "\nA: No, pigs cannot fly.")
    assert tiny_backbone.tokenizer.decode(plan.continuation_ids[1][3:]) == " Yes."


def test_skipped_prefix_changes_the_score(tiny_backbone):
    with_prefix = score_continuations(tiny_backbone, "Q: Can pigs fly?", ["\nA: No."])
    without_prefix = score_continuations(tiny_backbone, "Q: Can pigs fly?", ["\nA: No."], skip_prefix="\nA:")
    assert with_prefix[0] < without_prefix[0] < 0


def test_continuation_must_start_with_the_skipped_prefix(tiny_backbone):
    with pytest.raises(ValueError, match="does not start with the unscored prefix"):
        plan_scoring(tiny_backbone, "Q: x?", ["No."], skip_prefix="\nA:")


CANDIDATES = [
    "\nA: Nauru is the smallest country in the world that is at least one square mile in area.",
    "\nA: Vatican City.",
    "\nA: Monaco.",
    "\nA: The smallest country is the United States of America, which is very large indeed.",
    "\nA: I have no comment.",
]


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3_text"])
@pytest.mark.parametrize("batch_size", [1, 2, 32])
def test_cached_prefix_scores_equal_naive_scores(tiny_backbone_factory, family, batch_size):
    backbone = tiny_backbone_factory(family, seed=3)
    context = "Interpret each question literally.\n\nQ: What is the smallest country in the world?"
    plan = plan_scoring(backbone, context, CANDIDATES, skip_prefix="\nA:")
    cached, naive = score_cached(backbone, plan, batch_size=batch_size), score_naive(backbone, plan)
    assert all(math.isfinite(s) for s in cached)
    assert max(abs(a - b) for a, b in zip(cached, naive)) <= 1e-5
    assert len(set(cached)) == len(cached)


def test_single_token_choices_score_from_the_context_alone(tiny_backbone):
    """MMLU letters: every choice is one token, so its score is the context's next-token log-prob."""
    context = "Question?\nA. x\nB. y\nC. z\nD. w\nAnswer:"
    scores = score_continuations(tiny_backbone, context, [" A", " B", " C", " D"])
    ids = tiny_backbone.encode(context)
    with torch.no_grad():
        logprobs = tiny_backbone.model(input_ids=torch.tensor([ids])).logits[0, -1].double().log_softmax(-1)
    letters = [tiny_backbone.encode(f" {c}", add_bos=False)[0] for c in "ABCD"]
    assert scores == pytest.approx([float(logprobs[t]) for t in letters], abs=1e-6)


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_prefix_shared_across_questions_gives_naive_scores(tiny_backbone_factory, family):
    """Scoring from the cache of the instruction+primer prefix shared by all questions is exact."""
    backbone = tiny_backbone_factory(family, seed=5)
    head = "Interpret each question literally.\n\nQ: What is 2+2?\nA: 4.\n\nQ: "
    contexts = [head + "What is the smallest country in the world?", head + "Can pigs fly?", head + "Who wrote Hamlet?"]
    shared = shared_prefix_of(backbone, contexts)
    assert len(shared.ids) >= len(backbone.encode(head)) - 2
    for context in contexts:
        plan = plan_scoring(backbone, context, CANDIDATES, skip_prefix="\nA:")
        assert shared.covers(plan.context_ids)
        from_shared = score_cached(backbone, plan, batch_size=4, shared=shared)
        assert max(abs(a - b) for a, b in zip(from_shared, score_naive(backbone, plan))) <= 1e-5


def test_shared_prefix_never_swallows_a_whole_context(tiny_backbone):
    shared = shared_prefix_of(tiny_backbone, ["Q: same", "Q: same"])
    assert len(shared.ids) == len(tiny_backbone.encode("Q: same")) - 1
    assert shared.covers(tiny_backbone.encode("Q: same"))


@pytest.mark.parametrize("evaluate", [evaluate_truthfulqa_mc, evaluate_choice_accuracy])
def test_zero_questions_are_refused_before_a_nan_summary(tiny_backbone, tmp_path, evaluate):
    with pytest.raises(ValueError, match="no questions to evaluate"):
        evaluate(tiny_backbone, [], tmp_path)
    assert not (tmp_path / SUMMARY_FILE).exists()


@pytest.mark.parametrize("batch_size", [0, -3])
def test_a_non_positive_batch_size_is_refused_before_scoring(tiny_backbone, tmp_path, batch_size):
    question = ChoiceQuestion("Q: 1 + 1 =", (" 2", " 3"), gold=0)
    with pytest.raises(ValueError, match=f"batch_size must be a positive integer, got {batch_size}"):
        evaluate_choice_accuracy(tiny_backbone, [question], tmp_path, batch_size=batch_size)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        score_continuations(tiny_backbone, "Q: 1 + 1 =", [" 2"], batch_size=batch_size)


def test_a_non_finite_metric_is_refused_naming_it(tmp_path):
    with pytest.raises(ValueError, match=r"summary.json: metric 'mc2' is nan"):
        write_results(tmp_path, [{"mc2": float("nan")}], {"mc1": 0.5, "mc2": float("nan"), "num_examples": 1})
    assert list(tmp_path.iterdir()) == []


def test_mmlu_subjects_each_get_their_shots_cached_and_scores_equal_naive_scoring(shared_data, tiny_backbone, tmp_path):
    from lofit.tasks import get_task
    from lofit.tasks.mmlu import format_question, header

    task = get_task("mmlu", shared_data, shots=5, subjects=["anatomy", "astronomy"], sample=6, seed=1)
    questions = task.questions()
    assert {q.group for q in questions} == {"anatomy", "astronomy"}
    for indices, shared in group_prefixes(tiny_backbone, questions):
        subject = questions[indices[0]].group
        shots = header(subject) + "".join(format_question(row, with_answer=True) for row in task.dev_rows(subject))
        assert len(shared.ids) >= len(tiny_backbone.encode(shots)) - 1  # header and all five shots
        assert all(questions[index].group == subject for index in indices)
    evaluate_choice_accuracy(tiny_backbone, questions, tmp_path, batch_size=2)
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [row["prompt"] for row in rows] == [q.prompt for q in questions]  # the sampled order
    for row, question in zip(rows, questions):
        naive = score_naive(tiny_backbone, plan_scoring(tiny_backbone, question.prompt, question.choices))
        assert row["scores"] == pytest.approx(naive, abs=1e-4)

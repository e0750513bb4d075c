"""TruthfulQA open-ended answers for the truthfulness/informativeness judge (paper §5, GPT-4).

Each test question gets the MC evaluation's context (instruction + 6-shot primer + question),
then "\\nA:"; the model answers greedily (~50 new tokens) and the answer is the generated text up
to the next "Q:" (the primer's next question) or blank line, stripped.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lofit.data.examples import Split
from lofit.evaluation import check_examples, check_limit
from lofit.evaluation.generate import greedy_generate
from lofit.io import write_jsonl
from lofit.tasks.truthfulqa import TruthfulQA, mc_context

if TYPE_CHECKING:
    from lofit.backbone import Backbone

MAX_NEW_TOKENS = 50
ANSWER_CUE = "\nA:"


def open_ended_prompt(instruction: str, primer: str, question: str) -> str:
    return mc_context(instruction, primer, question) + ANSWER_CUE


def cut_answer(generated: str) -> str:
    """The answer part of a continuation: up to the next "Q:" or blank line, stripped."""
    answer = generated.split("Q:", 1)[0].split("\n\n", 1)[0]
    return answer.strip()


def generate_answers(
    backbone: Backbone,
    task: TruthfulQA,
    split: Split = "test",
    limit: int | None = None,
    batch_size: int = 16,
    model_label: str = "model",
    out_file: str | Path | None = None,
) -> list[dict]:
    """Greedy open-ended answers to a split's questions; rows carry id, question, answer, model."""
    check_limit(limit)
    instruction, primer = task.prompt_text("instruction.txt"), task.prompt_text("qa_primer.txt")
    rows = task.rows(split)[:limit]
    check_examples(rows, "questions")
    prompts = [open_ended_prompt(instruction, primer, row["Question"]) for row in rows]
    generated = greedy_generate(backbone, prompts, max_new_tokens=MAX_NEW_TOKENS, batch_size=batch_size)
    answers = [
        {
            "id": f"truthfulqa-fold{task.fold}-{split}-{index}",
            "question": row["Question"],
            "answer": cut_answer(text),
            "raw_generation": text,
            "model": model_label,
            "best_answer": row["Best Answer"],
        }
        for index, (row, text) in enumerate(zip(rows, generated))
    ]
    if out_file is not None:
        write_jsonl(out_file, answers)
    return answers

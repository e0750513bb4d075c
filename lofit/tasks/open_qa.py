"""Shared shape of the out-of-domain open QA tasks (TriviaQA, NQ-Open): k-shot, greedy, alias EM.

k-shot prompt: k solved questions "Question: {q}\\nAnswer: {first alias}\\n\\n" (the same k for
every question, from rows that are never scored; each task's docstring names them), then the
question "Question: {q}\\nAnswer:". The shots are one prefix shared by the whole set, so its KV
cache is computed once. The prediction is the first line of the continuation: after shots in this
layout the model ends its answer with a newline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lofit.data.examples import Split
from lofit.evaluation import first
from lofit.tasks.base import Task

if TYPE_CHECKING:
    from lofit.backbone import Backbone
    from lofit.evaluation.exact_match import GenerationItem

MAX_NEW_TOKENS = 16
SHOTS = (0, 5)


def open_qa_prompt(question: str) -> str:
    """0-shot prompt "Question: {question}\\nAnswer:" (llm-foundry's TriviaQA context format)."""
    return f"Question: {question}\nAnswer:"


@dataclass(frozen=True)
class QARecord:
    """One open QA row: the question, every accepted answer, and the answer a shot shows."""

    question: str
    answers: tuple[str, ...]
    shot_answer: str

    def item(self) -> GenerationItem:
        from lofit.evaluation.exact_match import GenerationItem

        return GenerationItem(open_qa_prompt(self.question), self.answers)

    def shot(self) -> str:
        return f"{open_qa_prompt(self.question)} {self.shot_answer}\n\n"


def check_shots(name: str, shots: int) -> int:
    if shots not in SHOTS:
        raise ValueError(f"{name} shots must be one of {SHOTS}, got {shots!r}")
    return shots


def shots_prefix(records: list[QARecord]) -> str:
    return "".join(record.shot() for record in records)


class OpenQATask(Task):
    """Evaluation-only: first generated line vs. any alias after SQuAD-style normalisation."""

    loss = None
    primary_metric = "exact_match"

    def items(self) -> list[GenerationItem]:
        """The scored questions (never a shot), in file order."""
        raise NotImplementedError

    def prefix(self) -> str:
        """The shots, "" 0-shot."""
        raise NotImplementedError

    def read_all(self) -> None:
        self.items()
        self.prefix()

    def examples(self, split: Split) -> list:
        raise ValueError(f"{self.name} is evaluation-only (out-of-domain); it has no training examples")

    def evaluate(
        self,
        backbone: Backbone,
        split: Split = "test",
        out_dir: str | Path | None = None,
        limit: int | None = None,
        batch_size: int = 16,
    ) -> dict[str, float]:
        if split != "test":
            raise ValueError(f"{self.name} has only a 'test' split, got '{split}'")
        from lofit.evaluation.exact_match import evaluate_exact_match, normalize_open_qa, parse_first_line

        return evaluate_exact_match(
            backbone,
            first(self.items(), limit),
            parse_first_line,
            normalize_open_qa,
            out_dir,
            batch_size,
            MAX_NEW_TOKENS,
            self.prefix(),
        )

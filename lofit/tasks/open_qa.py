"""Shared shape of the out-of-domain open QA tasks (TriviaQA, NQ-Open): 0-shot, greedy, alias EM."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lofit.data.examples import Split
from lofit.evaluation import first
from lofit.tasks.base import Task

if TYPE_CHECKING:
    from lofit.backbone import Backbone
    from lofit.evaluation.exact_match import GenerationItem

MAX_NEW_TOKENS = 16


def open_qa_prompt(question: str) -> str:
    """0-shot prompt "Question: {question}\\nAnswer:" (llm-foundry's TriviaQA context format)."""
    return f"Question: {question}\nAnswer:"


class OpenQATask(Task):
    """Evaluation-only: first generated line vs. any alias after SQuAD-style normalisation."""

    loss = None
    primary_metric = "exact_match"

    def items(self) -> list[GenerationItem]:
        raise NotImplementedError

    def read_all(self) -> None:
        self.items()

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
            backbone, first(self.items(), limit), parse_first_line, normalize_open_qa, out_dir, batch_size, MAX_NEW_TOKENS
        )

"""TruthfulQA with LoFiT's 2-fold splits: DPO pairs for training, MC1/MC2/MC3 for evaluation."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from lofit.data.examples import SPLITS, ContrastQuestion, PreferenceExample, Split
from lofit.data.readers import read_csv_records, read_text_file
from lofit.evaluation import first
from lofit.tasks.base import Task

if TYPE_CHECKING:
    from lofit.backbone import Backbone
    from lofit.evaluation.multiple_choice import TruthfulQAQuestion

COLUMNS = ("Question", "Best Answer", "Correct Answers", "Incorrect Answers")
FOLDS = (0, 1)
PROMPT_FILES = ("instruction.txt", "qa_primer.txt")


def training_prompt(question: str) -> str:
    """DPO prompt; the answer is appended with no space: "Q: {question} A:" + answer."""
    return f"Q: {question} A:"


def mc_context(instruction: str, primer: str, question: str) -> str:
    """Shared MC context: instruction + "\\n\\n" + primer + "\\n\\nQ: " + question."""
    return f"{instruction}\n\n{primer}\n\nQ: {question}"


def close_answer(answer: str) -> str:
    """Strip an answer and end it with "." (the reference's formatting of scored answers)."""
    answer = answer.strip()
    return answer if answer.endswith(".") else answer + "."


def split_answers(joined: str) -> list[str]:
    """`;`-separated answers, stripped, "." appended, empty pieces dropped."""
    return [close_answer(piece) for piece in joined.split(";") if piece.strip()]


def preference_pair(row: dict[str, str]) -> PreferenceExample:
    """chosen = Best Answer, rejected = first Incorrect Answer (split on "; " as the reference)."""
    return PreferenceExample(
        prompt=training_prompt(row["Question"]),
        chosen=row["Best Answer"],
        rejected=row["Incorrect Answers"].split("; ")[0],
    )


def truthfulqa_contrasts(rows: Iterable[Mapping[str, str]]) -> list[ContrastQuestion]:
    """ITI's statements "Q: {question} A:" + " " + answer; true = Best Answer + Correct Answers
    (deduplicated), false = Incorrect Answers, per row.

    Answers are `;`-split, stripped and closed with "." exactly as the MC evaluation formats them.
    Rows with no true or no false answer are dropped.
    """
    questions = []
    for row in rows:
        best = close_answer(row["Best Answer"]) if row["Best Answer"].strip() else None
        true = [best] if best else []
        true += [answer for answer in split_answers(row["Correct Answers"]) if answer not in true]
        false = split_answers(row["Incorrect Answers"])
        if true and false:
            questions.append(ContrastQuestion(training_prompt(row["Question"]), tuple(true), tuple(false)))
    return questions


def mc_question(row: dict[str, str], instruction: str, primer: str) -> TruthfulQAQuestion:
    """True answers = Best Answer first, then the Correct Answers not equal to it; false = Incorrect."""
    from lofit.evaluation.multiple_choice import TruthfulQAQuestion

    best = close_answer(row["Best Answer"])
    true = [best] + [answer for answer in split_answers(row["Correct Answers"]) if answer != best]
    return TruthfulQAQuestion(
        context=mc_context(instruction, primer, row["Question"]),
        true=tuple(true),
        false=tuple(split_answers(row["Incorrect Answers"])),
    )


class TruthfulQA(Task):
    name = "truthfulqa"
    loss = "dpo"
    primary_metric = "mc1"
    search_metrics = ("mc1", "mc2")  # MC1 decides, MC2 breaks ties

    def __init__(self, data_dir: str | Path = "data/raw", fold: int = 0) -> None:
        if fold not in FOLDS:
            raise ValueError(f"truthfulqa fold must be one of {FOLDS}, got {fold}")
        self.root = Path(data_dir) / "truthfulqa"
        self.fold = fold
        self._rows: dict[str, list[dict[str, str]]] = {}

    def raw_files(self) -> list[Path]:
        return [self.split_path(split) for split in SPLITS] + [self.root / name for name in PROMPT_FILES]

    def read_all(self) -> None:
        for split in SPLITS:
            self.rows(split)
        for name in PROMPT_FILES:
            self.prompt_text(name)

    def split_path(self, split: Split) -> Path:
        return self.root / "lofit_splits" / f"fold_{self.fold}_{split}_seed_42.csv"

    def rows(self, split: Split) -> list[dict[str, str]]:
        if split not in self._rows:
            self._rows[split] = read_csv_records(self.split_path(split), COLUMNS)
        return self._rows[split]

    def prompt_text(self, name: str) -> str:
        """instruction.txt / qa_primer.txt, exact bytes (no trailing newline)."""
        return read_text_file(self.root / name)

    def examples(self, split: Split) -> list[PreferenceExample]:
        return [preference_pair(row) for row in self.rows(split)]

    def contrasts(self, split: Split) -> list[ContrastQuestion]:
        return truthfulqa_contrasts(self.rows(split))

    def mc_questions(self, split: Split) -> list[TruthfulQAQuestion]:
        instruction, primer = self.prompt_text("instruction.txt"), self.prompt_text("qa_primer.txt")
        return [mc_question(row, instruction, primer) for row in self.rows(split)]

    def evaluate(
        self,
        backbone: Backbone,
        split: Split = "test",
        out_dir: str | Path | None = None,
        limit: int | None = None,
        batch_size: int = 16,
    ) -> dict[str, float]:
        from lofit.evaluation.multiple_choice import evaluate_truthfulqa_mc

        questions = first(self.mc_questions(split), limit)
        return evaluate_truthfulqa_mc(backbone, questions, out_dir, batch_size)

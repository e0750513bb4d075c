"""MMLU (out of domain): answer-letter log-likelihood, 0-shot or 5-shot from the dev set.

Prompt (Hendrycks et al.'s format): "The following are multiple choice questions (with answers)
about {subject words}.\\n\\n", then for each dev shot "{question}\\nA. {a}\\nB. {b}\\nC. {c}\\nD. {d}
\\nAnswer: {letter}\\n\\n", then the test question in the same layout ending in "Answer:". The
prediction is the letter whose continuation " A" / " B" / " C" / " D" has the highest log-prob.
The header and shots are a prefix shared by a subject's questions: its KV cache is encoded once per
subject (the questions are grouped by subject for scoring; rows keep the sampled order).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

from lofit.data.examples import Split
from lofit.data.readers import RawDataError, read_headerless_csv
from lofit.data.sources import MMLU_SUBJECTS
from lofit.evaluation import first
from lofit.tasks.base import Task

if TYPE_CHECKING:
    from lofit.backbone import Backbone
    from lofit.evaluation.multiple_choice import ChoiceQuestion

LETTERS = ("A", "B", "C", "D")
CHOICES = tuple(f" {letter}" for letter in LETTERS)
SHOTS = (0, 5)


def header(subject: str) -> str:
    return f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"


def format_question(row: list[str], with_answer: bool) -> str:
    """Question, lettered options, "Answer:" (plus " {letter}\\n\\n" for a shot)."""
    text = row[0] + "".join(f"\n{letter}. {option}" for letter, option in zip(LETTERS, row[1:5])) + "\nAnswer:"
    return text + f" {row[5]}\n\n" if with_answer else text


def _rows(path: Path) -> list[list[str]]:
    rows = read_headerless_csv(path, 6)
    for line, row in enumerate(rows, start=1):
        if row[5] not in LETTERS:
            raise RawDataError(f"{path}: row {line}: answer {row[5]!r} is not one of {LETTERS}")
    return rows


class MMLU(Task):
    name = "mmlu"
    loss = None
    primary_metric = "accuracy"

    def __init__(
        self,
        data_dir: str | Path = "data/raw",
        shots: int = 0,
        subjects: list[str] | None = None,
        sample: int | None = None,
        seed: int = 42,
    ) -> None:
        """`sample` draws that many test questions across the chosen subjects (seeded), for CPU runs."""
        if shots not in SHOTS:
            raise ValueError(f"mmlu shots must be one of {SHOTS}, got {shots}")
        unknown = sorted(set(subjects or ()) - set(MMLU_SUBJECTS))
        if unknown:
            raise ValueError(f"unknown mmlu subject(s) {unknown}; known: {list(MMLU_SUBJECTS)}")
        self.root = Path(data_dir) / "mmlu"
        self.shots, self.sample, self.seed = shots, sample, seed
        self.subjects = list(subjects or MMLU_SUBJECTS)
        self._rows: dict[Path, list[list[str]]] = {}

    def subject_files(self, subject: str) -> tuple[Path | None, Path]:
        """(dev file, or None 0-shot; test file) of a subject."""
        dev = self.root / "dev" / f"{subject}_dev.csv" if self.shots else None
        return dev, self.root / "test" / f"{subject}_test.csv"

    def raw_files(self) -> list[Path]:
        return [path for subject in self.subjects for path in self.subject_files(subject) if path is not None]

    def rows(self, path: Path) -> list[list[str]]:
        if path not in self._rows:
            self._rows[path] = _rows(path)
        return self._rows[path]

    def read_all(self) -> None:
        for subject in self.subjects:
            self.dev_rows(subject)
            self.rows(self.subject_files(subject)[1])

    def dev_rows(self, subject: str) -> list[list[str]]:
        """The subject's dev rows, whose first `shots` are the shots (none 0-shot); too few is an error."""
        dev = self.subject_files(subject)[0]
        if dev is None:
            return []
        rows = self.rows(dev)
        if len(rows) < self.shots:
            raise RawDataError(f"{dev}: {len(rows)} rows, {self.shots}-shot needs {self.shots}")
        return rows

    def prompt(self, subject: str, row: list[str], dev_rows: list[list[str]]) -> str:
        shots = "".join(format_question(shot, with_answer=True) for shot in dev_rows[: self.shots])
        return header(subject) + shots + format_question(row, with_answer=False)

    def questions(self) -> list[ChoiceQuestion]:
        from lofit.evaluation.multiple_choice import ChoiceQuestion

        questions = []
        for subject in self.subjects:
            dev_rows = self.dev_rows(subject)
            for row in self.rows(self.subject_files(subject)[1]):
                prompt = self.prompt(subject, row, dev_rows)
                questions.append(ChoiceQuestion(prompt, CHOICES, LETTERS.index(row[5]), group=subject))
        if self.sample is not None:
            questions = random.Random(self.seed).sample(questions, min(self.sample, len(questions)))
        return questions

    def examples(self, split: Split) -> list:
        raise ValueError("mmlu is evaluation-only (out-of-domain); it has no training examples")

    def evaluate(
        self,
        backbone: Backbone,
        split: Split = "test",
        out_dir: str | Path | None = None,
        limit: int | None = None,
        batch_size: int = 16,
    ) -> dict[str, float]:
        if split != "test":
            raise ValueError(f"mmlu has only a 'test' split here, got '{split}'")
        from lofit.evaluation.multiple_choice import evaluate_choice_accuracy

        return evaluate_choice_accuracy(backbone, first(self.questions(), limit), out_dir, batch_size)

"""Task registry: `get_task(name, data_dir, **options)` builds a task reading validated raw files."""

from __future__ import annotations

from pathlib import Path

from lofit.tasks.base import Task
from lofit.tasks.clutrr import CLUTRR
from lofit.tasks.mmlu import MMLU
from lofit.tasks.mquake import MQuAKE
from lofit.tasks.nq_open import NQOpen
from lofit.tasks.triviaqa import TriviaQA
from lofit.tasks.truthfulqa import TruthfulQA

TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (TruthfulQA, MQuAKE, CLUTRR, TriviaQA, NQOpen, MMLU)}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)


def get_task(name: str, data_dir: str | Path = "data/raw", **options) -> Task:
    """The task `name` over raw files in `data_dir`; options go to its constructor (e.g. fold=1)."""
    if name not in TASKS:
        raise ValueError(f"unknown task '{name}'; known: {', '.join(TASK_NAMES)}")
    return TASKS[name](data_dir, **options)

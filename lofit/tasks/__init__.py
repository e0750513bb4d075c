"""Task registry: `get_task(name, data_dir, **options)` builds a task whose raw files are checked.

The prompt-format options every task takes (`chat_template`, `system_prompt`) are taken out of
`options` here and set on the task (`task.prompt_format`); the rest go to its constructor.

Building a task reads every raw file it will use (through the Arrow cache), so a missing folder
or a bad file fails in one line before any model loads; files missing from the data folder are
placed first (mirror or pinned source, sha256-checked), so a fresh clone needs no setup step.
"""

from __future__ import annotations

from pathlib import Path

from lofit.data.prompt_format import split_prompt_options
from lofit.data.readers import RawDataError
from lofit.data.sources import DEFAULT_DATA_DIR, DataSourceError, place_missing
from lofit.tasks.base import Task
from lofit.tasks.clutrr import CLUTRR
from lofit.tasks.files import Files
from lofit.tasks.mmlu import MMLU
from lofit.tasks.movielens import MovieLens
from lofit.tasks.mquake import MQuAKE
from lofit.tasks.nq_open import NQOpen
from lofit.tasks.triviaqa import TriviaQA
from lofit.tasks.truthfulqa import TruthfulQA

TASKS: dict[str, type[Task]] = {
    cls.name: cls for cls in (TruthfulQA, MQuAKE, CLUTRR, TriviaQA, NQOpen, MMLU, MovieLens, Files)
}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)


def get_task(name: str, data_dir: str | Path = DEFAULT_DATA_DIR, **options) -> Task:
    """The task `name` over raw files in `data_dir`; options go to its constructor (e.g. fold=1),
    except the prompt-format ones (`chat_template`, `system_prompt`), which every task takes.

    Only the default `data/raw` is created when absent; any other missing folder is an error (a
    typo should not fetch data into a new folder).
    """
    if name not in TASKS:
        raise ValueError(f"unknown task '{name}'; known: {', '.join(TASK_NAMES)}")
    prompt_format, options = split_prompt_options(options)
    task = TASKS[name](data_dir, **options)
    task.prompt_format = prompt_format
    root = Path(data_dir)
    if not root.is_dir() and root.resolve() != Path(DEFAULT_DATA_DIR).resolve():
        raise RawDataError(f"task.data_dir {data_dir}: folder not found")
    try:
        place_missing(root, [path.relative_to(root).as_posix() for path in task.raw_files()])
    except DataSourceError as err:
        raise RawDataError(f"{root}: {err}") from None
    task.read_all()
    return task

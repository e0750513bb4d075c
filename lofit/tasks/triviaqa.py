"""TriviaQA (out of domain): two public question subsets, 0-shot, exact match against aliases."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lofit.data.readers import RawDataError, read_jsonl_records
from lofit.tasks.open_qa import OpenQATask, open_qa_prompt

if TYPE_CHECKING:
    from lofit.evaluation.exact_match import GenerationItem

SUBSETS = {
    # name: (file, required fields)
    "test_1000": ("triviaqa_test_1000.jsonl", ("question", "answers")),
    "sm_sub": ("triviaqa_sm_sub.jsonl", ("context", "answer", "aliases")),
}


def _item(path: Path, line: int, subset: str, record: dict) -> GenerationItem:
    from lofit.evaluation.exact_match import GenerationItem

    if subset == "test_1000":
        return GenerationItem(open_qa_prompt(record["question"]), tuple(record["answers"]))
    context = record["context"]
    if not (context.startswith("Question: ") and context.endswith("\nAnswer:")):
        raise RawDataError(f"{path}: line {line}: context is not 'Question: ...\\nAnswer:'")
    # llm-foundry's context already is the shared open-QA prompt format
    return GenerationItem(context, (record["answer"], *record["aliases"]))


class TriviaQA(OpenQATask):
    name = "triviaqa"

    def __init__(self, data_dir: str | Path = "data/raw", subset: str = "test_1000") -> None:
        if subset not in SUBSETS:
            raise ValueError(f"unknown triviaqa subset '{subset}'; known: {sorted(SUBSETS)}")
        self.path = Path(data_dir) / "triviaqa" / SUBSETS[subset][0]
        self.subset = subset
        self._items: list[GenerationItem] | None = None

    def raw_files(self) -> list[Path]:
        return [self.path]

    def items(self) -> list[GenerationItem]:
        if self._items is None:
            records = read_jsonl_records(self.path, SUBSETS[self.subset][1])
            self._items = [_item(self.path, line, self.subset, r) for line, r in enumerate(records, start=1)]
        return self._items

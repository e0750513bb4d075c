"""Natural Questions Open, original dev split (out of domain), 0-shot exact match."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lofit.data.readers import read_jsonl_records
from lofit.tasks.open_qa import OpenQATask, open_qa_prompt

if TYPE_CHECKING:
    from lofit.evaluation.exact_match import GenerationItem


class NQOpen(OpenQATask):
    name = "nq_open"

    def __init__(self, data_dir: str | Path = "data/raw") -> None:
        self.path = Path(data_dir) / "nq_open" / "NQ-open.dev.jsonl"
        self._items: list[GenerationItem] | None = None

    def raw_files(self) -> list[Path]:
        return [self.path]

    def items(self) -> list[GenerationItem]:
        """Questions are lower-case without "?" upstream; they are used verbatim."""
        from lofit.evaluation.exact_match import GenerationItem

        if self._items is None:
            records = read_jsonl_records(self.path, ("question", "answer"))
            self._items = [GenerationItem(open_qa_prompt(r["question"]), tuple(r["answer"])) for r in records]
        return self._items

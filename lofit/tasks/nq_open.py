"""Natural Questions Open, original dev split (out of domain), 0- or 5-shot exact match.

The file is the only NQ-Open split here, so k-shot takes its first k rows as the shots (shown with
their first answer) and scores the rows after them; 0-shot scores every row.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lofit.data.readers import read_jsonl_records
from lofit.tasks.open_qa import OpenQATask, QARecord, check_shots, shots_prefix

if TYPE_CHECKING:
    from lofit.evaluation.exact_match import GenerationItem


class NQOpen(OpenQATask):
    name = "nq_open"

    def __init__(self, data_dir: str | Path = "data/raw", shots: int = 0) -> None:
        self.path = Path(data_dir) / "nq_open" / "NQ-open.dev.jsonl"
        self.shots = check_shots(self.name, shots)
        self._records: list[QARecord] | None = None

    def raw_files(self) -> list[Path]:
        return [self.path]

    def records(self) -> list[QARecord]:
        """Questions are lower-case without "?" upstream; they are used verbatim."""
        if self._records is None:
            rows = read_jsonl_records(self.path, ("question", "answer"))
            self._records = [QARecord(r["question"], tuple(r["answer"]), r["answer"][0]) for r in rows]
        return self._records

    def items(self) -> list[GenerationItem]:
        return [record.item() for record in self.records()[self.shots :]]

    def prefix(self) -> str:
        return shots_prefix(self.records()[: self.shots])

"""TriviaQA (out of domain): two public question subsets, 0- or 5-shot, exact match against aliases.

k-shot: the shots are rows of `triviaqa_sm_sub.jsonl`, shown with its `answer` field (the canonical
answer; `triviaqa_test_1000.jsonl` has only an unordered alias list, whose first entry can be e.g.
"First man in space" for Yuri Gagarin). For `test_1000` they are the first k sm_sub rows whose
question, SQuAD-normalised as answers are, is not in test_1000 (268 questions are in both files),
so all 1000 rows are scored; for `sm_sub` they are its own first k rows, which are then not scored.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lofit.data.readers import RawDataError, read_jsonl_records
from lofit.tasks.open_qa import OpenQATask, QARecord, check_shots, shots_prefix

if TYPE_CHECKING:
    from lofit.evaluation.exact_match import GenerationItem

SUBSETS = {
    # name: (file, required fields)
    "test_1000": ("triviaqa_test_1000.jsonl", ("question", "answers")),
    "sm_sub": ("triviaqa_sm_sub.jsonl", ("context", "answer", "aliases")),
}
SHOT_SUBSET = "sm_sub"
CONTEXT_START, CONTEXT_END = "Question: ", "\nAnswer:"


def _record(path: Path, line: int, subset: str, record: dict) -> QARecord:
    if subset == "test_1000":
        return QARecord(record["question"], tuple(record["answers"]), record["answers"][0])
    context = record["context"]
    if not (context.startswith(CONTEXT_START) and context.endswith(CONTEXT_END)):
        raise RawDataError(f"{path}: line {line}: context is not 'Question: ...\\nAnswer:'")
    # llm-foundry's context already is the shared open-QA prompt format
    question = context[len(CONTEXT_START) : -len(CONTEXT_END)]
    return QARecord(question, (record["answer"], *record["aliases"]), record["answer"])


class TriviaQA(OpenQATask):
    name = "triviaqa"

    def __init__(self, data_dir: str | Path = "data/raw", subset: str = "test_1000", shots: int = 0) -> None:
        if subset not in SUBSETS:
            raise ValueError(f"unknown triviaqa subset '{subset}'; known: {sorted(SUBSETS)}")
        self.root = Path(data_dir) / "triviaqa"
        self.path = self.root / SUBSETS[subset][0]
        self.subset = subset
        self.shots = check_shots(self.name, shots)
        self._records: dict[str, list[QARecord]] = {}

    def raw_files(self) -> list[Path]:
        shot_file = self.root / SUBSETS[SHOT_SUBSET][0]
        return [self.path, shot_file] if self.shots and shot_file != self.path else [self.path]

    def records(self, subset: str) -> list[QARecord]:
        if subset not in self._records:
            path, fields = self.root / SUBSETS[subset][0], SUBSETS[subset][1]
            self._records[subset] = [_record(path, line, subset, r) for line, r in enumerate(read_jsonl_records(path, fields), 1)]
        return self._records[subset]

    def scored_records(self) -> list[QARecord]:
        records = self.records(self.subset)
        return records[self.shots :] if self.subset == SHOT_SUBSET else records

    def items(self) -> list[GenerationItem]:
        return [record.item() for record in self.scored_records()]

    def shot_records(self) -> list[QARecord]:
        """The first `shots` sm_sub rows whose question is not scored (see the module docstring)."""
        if not self.shots:
            return []
        if self.subset == SHOT_SUBSET:
            return self.records(SHOT_SUBSET)[: self.shots]
        from lofit.evaluation.exact_match import normalize_open_qa

        scored = {normalize_open_qa(record.question) for record in self.scored_records()}
        pool = [r for r in self.records(SHOT_SUBSET) if normalize_open_qa(r.question) not in scored]
        if len(pool) < self.shots:
            raise RawDataError(f"{self.root}: {len(pool)} questions outside '{self.subset}', {self.shots}-shot needs {self.shots}")
        return pool[: self.shots]

    def prefix(self) -> str:
        return shots_prefix(self.shot_records())

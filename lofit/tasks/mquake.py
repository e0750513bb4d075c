"""MQuAKE (LoFiT's single-edit splits): answer a multi-hop question under a counterfactual edit."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lofit.data.examples import SPLITS, SFTExample, Split
from lofit.data.readers import RawDataError, read_jsonl_records
from lofit.evaluation import first
from lofit.tasks.base import Task

if TYPE_CHECKING:
    from lofit.backbone import Backbone

FIELDS = ("requested_rewrite", "questions", "new_answer", "new_answer_alias")


def edited_fact(record: dict) -> str:
    """The edit as a sentence fragment: rewrite prompt with the subject filled in, space, new target."""
    rewrite = record["requested_rewrite"][0]
    return f"{rewrite['prompt'].format(rewrite['subject'])} {rewrite['target_new']['str']}"


def prompt_for(record: dict) -> str:
    """`Q: Imagine that {edit}. {first question} A:` (the answer follows with no space)."""
    return f"Q: Imagine that {edited_fact(record)}. {record['questions'][0]} A:"


def answers_for(record: dict) -> tuple[str, ...]:
    """Accepted answers: the new answer, then its aliases."""
    return (record["new_answer"], *record["new_answer_alias"])


def _validate(path: Path, records: list[dict]) -> list[dict]:
    for line, record in enumerate(records, start=1):
        rewrite = record["requested_rewrite"]
        if not (isinstance(rewrite, list) and rewrite and {"prompt", "subject", "target_new"} <= set(rewrite[0])):
            raise RawDataError(f"{path}: record {line}: requested_rewrite[0] needs prompt, subject, target_new")
        if not record["questions"]:
            raise RawDataError(f"{path}: record {line}: empty questions")
    return records


class MQuAKE(Task):
    name = "mquake"
    loss = "sft"
    primary_metric = "exact_match"

    def __init__(self, data_dir: str | Path = "data/raw") -> None:
        self.root = Path(data_dir) / "mquake"
        self._records: dict[str, list[dict]] = {}

    def raw_files(self) -> list[Path]:
        return [self.root / f"{split}.jsonl" for split in SPLITS]

    def read_all(self) -> None:
        for split in SPLITS:
            self.records(split)

    def records(self, split: Split) -> list[dict]:
        if split not in self._records:
            path = self.root / f"{split}.jsonl"
            self._records[split] = _validate(path, read_jsonl_records(path, FIELDS))
        return self._records[split]

    def examples(self, split: Split) -> list[SFTExample]:
        """prompt = `... A:`, completion = new answer; prompt + completion is the reference's text."""
        return [SFTExample(prompt_for(r), r["new_answer"]) for r in self.records(split)]

    def evaluate(
        self,
        backbone: Backbone,
        split: Split = "test",
        out_dir: str | Path | None = None,
        limit: int | None = None,
        batch_size: int = 16,
    ) -> dict[str, float]:
        from lofit.evaluation.exact_match import GenerationItem, evaluate_exact_match, lower_strip, parse_mquake

        items = [GenerationItem(prompt_for(r), answers_for(r)) for r in first(self.records(split), limit)]
        return evaluate_exact_match(backbone, items, parse_mquake, lower_strip, out_dir, batch_size)

"""CLUTRR 2-hop kinship reasoning (LoFiT's splits; 300 training stories sampled with seed 42)."""

from __future__ import annotations

import ast
import random
from pathlib import Path
from typing import TYPE_CHECKING

from lofit.data.examples import SPLITS, SFTExample, Split
from lofit.data.readers import RawDataError, read_json_records
from lofit.evaluation import first
from lofit.tasks.base import Task

if TYPE_CHECKING:
    from lofit.backbone import Backbone

FIELDS = ("clean_story", "query", "target_text")
TEMPLATE = (
    'Read the following story about a family. "{story}" Assume the relations described in the story are all '
    "true. Based on relations between the fictional characters in the story (assume the relations are all "
    "true) and your commonsense knowledge about family relationship, how is {p2} related to {p1}? "
    "Answer: {p2} is {p1} 's"
)


def query_people(path: Path, index: int, query: str) -> tuple[str, str]:
    """(p1, p2) from a query string like "('Cleo', 'Roy')".

    Parsed as a Python tuple, so names carry no stray space; the reference's comma split yields
    " Roy" and hence a double space before p2 in its prompts.
    """
    try:
        people = ast.literal_eval(query)
    except (ValueError, SyntaxError):
        people = None
    if not (isinstance(people, tuple) and len(people) == 2 and all(isinstance(p, str) for p in people)):
        raise RawDataError(f"{path}: item {index}: query {query!r} is not a pair of names")
    return people


def prompt_for(story: str, p1: str, p2: str) -> str:
    """Question prompt ending in "'s\\n": the relation follows on the next line."""
    return TEMPLATE.format(story=story.replace("[", "").replace("]", ""), p1=p1, p2=p2) + "\n"


class CLUTRR(Task):
    name = "clutrr"
    loss = "sft"
    primary_metric = "exact_match"

    def __init__(self, data_dir: str | Path = "data/raw", train_size: int = 300, seed: int = 42) -> None:
        self.root = Path(data_dir) / "clutrr"
        self.train_size, self.seed = train_size, seed
        self._items: dict[str, list[tuple[str, str]]] = {}

    def raw_files(self) -> list[Path]:
        return [self.root / f"{split}.json" for split in SPLITS]

    def read_all(self) -> None:
        for split in SPLITS:
            self.items(split)

    def items(self, split: Split) -> list[tuple[str, str]]:
        """(prompt, target relation) pairs; train is `random.sample(train, train_size)` after seeding."""
        if split not in self._items:
            path = self.root / f"{split}.json"
            records = read_json_records(path, FIELDS)
            if split == "train" and self.train_size:
                if self.train_size > len(records):
                    raise ValueError(f"{path}: train_size {self.train_size} exceeds the {len(records)} stories")
                # same draw as the reference's random.seed(seed); random.sample(...), without global state
                records = random.Random(self.seed).sample(records, self.train_size)
            pairs = []
            for index, record in enumerate(records):
                p1, p2 = query_people(path, index, record["query"])
                pairs.append((prompt_for(record["clean_story"], p1, p2), record["target_text"]))
            self._items[split] = pairs
        return self._items[split]

    def examples(self, split: Split) -> list[SFTExample]:
        """prompt ends with "'s\\n", completion = relation (no space); EOS is the collator's job."""
        return [SFTExample(prompt, target) for prompt, target in self.items(split)]

    def evaluate(
        self,
        backbone: Backbone,
        split: Split = "test",
        out_dir: str | Path | None = None,
        limit: int | None = None,
        batch_size: int = 16,
    ) -> dict[str, float]:
        from lofit.evaluation.exact_match import GenerationItem, evaluate_exact_match, lower_strip, parse_clutrr

        items = [GenerationItem(prompt, (target,)) for prompt, target in first(self.items(split), limit)]
        return evaluate_exact_match(backbone, items, parse_clutrr, lower_strip, out_dir, batch_size)

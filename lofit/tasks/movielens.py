"""MovieLens-100K as TALLRec (Bao et al., 2023) frames it: will the user like the target movie?

Samples (what this module implements):
- per user, interactions in time order, ties (equal timestamps) broken by item id;
- every interaction with at least `HISTORY` interactions of the same user *strictly earlier* in
  time is a target; its history is the `HISTORY` most recent of those (so nothing at or after the
  target's timestamp is ever in it), split into liked (rating > 3) and disliked, each list oldest
  first; label "Yes." when the target's rating is > 3, else "No.";
- all samples ordered by (target timestamp, user, item) and cut 8:1:1 into train / val / test, so
  every validation target is no earlier than every training target and every test target no
  earlier than every validation one;
- the training set is `train_size` samples drawn from train with `random.Random(seed).sample`
  (TALLRec's few-shot sizes are 16, 64 and 256; 0 keeps all of train).
Prompt: TALLRec's instruction and input in the Alpaca template of its code; answer "Yes." / "No."
(completion-only SFT). Evaluation: AUC of P(Yes) / (P(Yes) + P(No)) from the first answer token.
Data: the licence forbids redistribution, so the files are prepared locally into
`data/restricted/movielens` (`pipelines/prepare_movielens.py`), the task's default folder.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING

from lofit.data.examples import SFTExample, Split
from lofit.data.movielens import MOVIES_FILE, RATINGS_FILE, Rating, read_movies, read_ratings
from lofit.data.readers import RawDataError
from lofit.evaluation import first
from lofit.tasks.base import Task

if TYPE_CHECKING:
    from lofit.backbone import Backbone

HISTORY = 10
LIKED_ABOVE = 3
ANSWERS = ("Yes.", "No.")
INSTRUCTION = (
    "Given the user's preference and unpreference, identify whether the user will like the target movie "
    'by answering "Yes." or "No.".'
)
TEMPLATE = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)


@dataclass(frozen=True)
class Sample:
    """A target interaction and the user's `HISTORY` interactions strictly before it (oldest first)."""

    history: tuple[Rating, ...]
    target: Rating

    @property
    def liked(self) -> bool:
        return self.target.rating > LIKED_ABOVE


def build_samples(ratings: list[Rating], history: int = HISTORY) -> list[Sample]:
    """Every target with `history` strictly earlier interactions, ordered by (timestamp, user, item)."""
    samples = []
    for _, group in groupby(sorted(ratings), key=lambda r: r.user):
        timeline = list(group)  # Rating sorts by (user, timestamp, item)
        times = [r.timestamp for r in timeline]
        for target in timeline:
            earlier = bisect.bisect_left(times, target.timestamp)
            if earlier >= history:
                samples.append(Sample(tuple(timeline[earlier - history : earlier]), target))
    samples.sort(key=lambda s: (s.target.timestamp, s.target.user, s.target.item))
    return samples


def chronological_split(samples: list[Sample]) -> dict[Split, list[Sample]]:
    """The first 80% of time-ordered samples train, the next 10% val, the rest test."""
    n_train, n_val = len(samples) * 8 // 10, len(samples) // 10
    return {"train": samples[:n_train], "val": samples[n_train : n_train + n_val], "test": samples[n_train + n_val :]}


def _titles(ratings: tuple[Rating, ...], movies: dict[int, str]) -> str:
    return ", ".join(f'"{movies[r.item]}"' for r in ratings)


def prompt_for(sample: Sample, movies: dict[int, str]) -> str:
    liked = tuple(r for r in sample.history if r.rating > LIKED_ABOVE)
    disliked = tuple(r for r in sample.history if r.rating <= LIKED_ABOVE)
    text = (
        f"User Preference: {_titles(liked, movies)}\nUser Unpreference: {_titles(disliked, movies)}\n"
        f'Whether the user will like the target movie "{movies[sample.target.item]}"?'
    )
    return TEMPLATE.format(instruction=INSTRUCTION, input=text)


# where the restricted MovieLens files are prepared (params.yaml `recommend.data_dir`), never data/raw
RESTRICTED_DATA_DIR = "data/restricted"


class MovieLens(Task):
    name = "movielens"
    loss = "sft"
    primary_metric = "auc"

    def __init__(self, data_dir: str | Path = RESTRICTED_DATA_DIR, train_size: int = 256, seed: int = 42) -> None:
        if isinstance(train_size, bool) or not isinstance(train_size, int) or train_size < 0:
            raise ValueError(f"train_size must be a non-negative number of samples (0: all), got {train_size!r}")
        self.root = Path(data_dir) / "movielens"
        self.train_size, self.seed = train_size, seed
        self._splits: dict[Split, list[Sample]] | None = None
        self._movies: dict[int, str] = {}

    def raw_files(self) -> list[Path]:
        return [self.root / RATINGS_FILE, self.root / MOVIES_FILE]

    def read_all(self) -> None:
        self.samples("train")

    def samples(self, split: Split) -> list[Sample]:
        """The split's samples; train is the seeded draw of `train_size` (in draw order)."""
        if self._splits is None:
            ratings = read_ratings(self.root / RATINGS_FILE)
            self._movies = read_movies(self.root / MOVIES_FILE)
            if unknown := sorted({r.item for r in ratings} - set(self._movies)):
                raise RawDataError(f"{self.root / MOVIES_FILE}: no title for rated item(s) {unknown[:5]}")
            splits = chronological_split(build_samples(ratings))
            if self.train_size:
                if self.train_size > len(splits["train"]):
                    raise ValueError(f"{self.root}: train_size {self.train_size} exceeds the {len(splits['train'])} training samples")
                splits["train"] = random.Random(self.seed).sample(splits["train"], self.train_size)
            self._splits = splits
        return self._splits[split]

    def examples(self, split: Split) -> list[SFTExample]:
        """prompt ends with "### Response:\\n"; completion "Yes." or "No." (EOS is the collator's)."""
        return [SFTExample(prompt_for(s, self._movies), ANSWERS[0] if s.liked else ANSWERS[1]) for s in self.samples(split)]

    def evaluate(
        self,
        backbone: Backbone,
        split: Split = "test",
        out_dir: str | Path | None = None,
        limit: int | None = None,
        batch_size: int = 16,
    ) -> dict[str, float]:
        from lofit.evaluation.yes_no import YesNoItem, evaluate_yes_no

        items = [
            YesNoItem(prompt_for(s, self._movies), s.liked, {"user": s.target.user, "item": s.target.item, "timestamp": s.target.timestamp})
            for s in first(self.samples(split), limit)
        ]
        return evaluate_yes_no(backbone, items, ANSWERS, out_dir, batch_size)

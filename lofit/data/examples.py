"""The plain-text examples that flow from the tasks into tokenization (the data layer's types).

Tasks produce them, `lofit.data.collate` tokenizes them; they live here so the data layer never
imports the tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Union

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")
LossKind = Literal["sft", "dpo"]  # sft trains on SFTExample, dpo on PreferenceExample


@dataclass(frozen=True)
class SFTExample:
    """Completion-only supervision: the loss covers `completion` (and EOS), never `prompt`."""

    prompt: str
    completion: str


@dataclass(frozen=True)
class PreferenceExample:
    """One DPO pair: `prompt` + `chosen` is preferred over `prompt` + `rejected`."""

    prompt: str
    chosen: str
    rejected: str


Example = Union[SFTExample, PreferenceExample]

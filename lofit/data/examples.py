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


@dataclass(frozen=True)
class ContrastQuestion:
    """One prompt with answers known to be true and answers known to be false (ITI's and RepE's data).

    A statement is the prompt continued by `separator + answer`, split into prompt and
    continuation where the task's training and scoring split it, so activations are read on the
    text the model sees there (a chat template renders the prompt and the answer follows it, as in
    `Backbone.encode_prompt`).
    """

    prompt: str
    true: tuple[str, ...]
    false: tuple[str, ...]
    separator: str = " "

    def statement(self, answer: str) -> tuple[str, str]:
        """(prompt, continuation) of the statement that `answer` makes."""
        return self.prompt, self.separator + answer

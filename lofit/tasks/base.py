"""The interface every task implements: raw files → examples → metrics.

A task turns its validated raw files into plain-text training examples (the training code
tokenizes them) and evaluates a model on a split, writing per-example JSONL and a summary JSON.
It names the raw files it reads and can read them all at once, so that building a task (the
registry's `get_task`) places missing files and fails on a bad one before any model loads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from lofit.data.examples import ContrastQuestion, Example, LossKind, Split
from lofit.data.prompt_format import PromptFormat
from lofit.errors import ConfigError

if TYPE_CHECKING:
    from lofit.backbone import Backbone


@dataclass(frozen=True)
class GenerationPrompts:
    """What `lofit generate` continues: a split's prompts, and how the task's evaluator generates
    after them (its token budget, and where its answer is final so generation may stop)."""

    prompts: list[str]
    max_new_tokens: int
    is_final: Callable[[str], bool] | None = None


class Task:
    """Base class of a task; subclasses set the class attributes and implement the methods."""

    name: ClassVar[str]
    loss: ClassVar[LossKind | None]  # None: evaluation-only task (OOD sets)
    primary_metric: ClassVar[str]
    # validation metrics that rank a training-free method's grid (ITI, RepE), later ones breaking
    # ties; empty: the primary metric alone
    search_metrics: ClassVar[tuple[str, ...]] = ()
    # how prompts are shown to the model; set from the generic task options by the registry, and
    # carried by the backbone the task trains or evaluates (`Backbone.use_prompt_format`)
    prompt_format: PromptFormat = PromptFormat()

    def raw_files(self) -> list[Path]:
        """Every raw file this task reads with its options (paths under its data folder)."""
        return []

    def read_all(self) -> None:
        """Read and check every raw file now (kept in memory); a bad one raises RawDataError."""

    def examples(self, split: Split) -> list[Example]:
        """Training-format examples of a split (train and val for trainable tasks)."""
        raise NotImplementedError

    def contrasts(self, split: Split) -> list[ContrastQuestion]:
        """Prompts with true and false answers, which ITI and RepE read activations on."""
        raise ConfigError(
            f"task '{self.name}' has no true/false answers: ITI/RepE need truthfulqa or a files task "
            "with kind: dpo or evaluation: multiple_choice"
        )

    def generation_prompts(self, split: Split) -> GenerationPrompts:
        """The prompts `lofit generate` continues greedily, as the task's evaluator would."""
        raise ConfigError(f"task '{self.name}' has no prompts for lofit generate (truthfulqa and files tasks have)")

    def search_keys(self) -> tuple[str, ...]:
        """The validation metrics a training-free method's settings are chosen by, in order."""
        return self.search_metrics or (self.primary_metric,)

    def evaluate(
        self,
        backbone: Backbone,
        split: Split = "test",
        out_dir: str | Path | None = None,
        limit: int | None = None,
        batch_size: int = 16,
    ) -> dict[str, float]:
        """Score the backbone (with whatever intervention is attached) on a split.

        Writes `out_dir/predictions.jsonl` (one line per example) and `out_dir/summary.json`
        when `out_dir` is given, and returns the summary metrics.
        """
        raise NotImplementedError

"""Train/val batches of a task, tokenized once per process.

The training sampler is always a `DistributedSampler` seeded by the run seed (one replica when
not distributed), so the data order depends only on (seed, epoch): a run resumed from a
checkpoint sees the same batches as an uninterrupted one, and DDP shards the same permutation.
Splits are `datasets.Dataset`s tokenized with `Dataset.map`; rows come out as plain dicts of
lists, so the loaders and the collator see exactly what a list of features would give them.
"""

from __future__ import annotations

import lightning as L
from datasets import Dataset
from torch.utils.data import DataLoader, DistributedSampler

from lofit.backbone import Backbone
from lofit.data.collate import PadCollator, tokenize_dataset
from lofit.data.examples import Split
from lofit.tasks.base import Task
from lofit.training.config import DataConfig


class LoFiTDataModule(L.LightningDataModule):
    """Tokenized train and val splits of `task` for `backbone`.

    Args:
        task: supplies `examples("train")` and `examples("val")`.
        backbone: its tokenizer and BOS rule encode the examples.
        config: batch sizes, truncation and limits.
        seed: seeds the training order.
    """

    def __init__(self, task: Task, backbone: Backbone, config: DataConfig | None = None, seed: int = 42) -> None:
        super().__init__()
        self.task = task
        self.backbone = backbone
        self.config = config or DataConfig()
        self.seed = seed
        self.splits: dict[str, Dataset] = {}
        self.collate = PadCollator(backbone.tokenizer.pad_token_id)

    def features(self, split: Split) -> Dataset:
        """Tokenized examples of a split (cached); limits from the config apply."""
        if split not in self.splits:
            limit = {"train": self.config.train_limit, "val": self.config.val_limit}.get(split)
            examples = self.task.examples(split)[:limit]
            if not examples:
                raise ValueError(f"task '{self.task.name}' has no '{split}' examples")
            self.splits[split] = tokenize_dataset(
                self.backbone, examples, self.config.max_length, self.config.max_prompt_length
            )
        return self.splits[split]

    def setup(self, stage: str) -> None:
        self.features("train")
        self.features("val")

    def train_dataloader(self) -> DataLoader:
        data = self.features("train")
        trainer = self.trainer
        sampler = DistributedSampler(
            data,
            num_replicas=trainer.world_size if trainer else 1,
            rank=trainer.global_rank if trainer else 0,
            shuffle=True,
            seed=self.seed,
        )
        return DataLoader(
            data,
            batch_size=self.config.batch_size,
            sampler=sampler,
            collate_fn=self.collate,
            num_workers=self.config.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            self.features("val"),
            batch_size=self.config.eval_batch_size,
            shuffle=False,
            collate_fn=self.collate,
            num_workers=self.config.num_workers,
        )

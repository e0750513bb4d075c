"""Step 2 of LoFiT: learn offsets v on the top-K heads of a step-1 ranking.

Starts again from the base model (the step-1 scales are discarded); only the chosen heads have
trainable entries, every other head's offset stays exactly 0. The product is an adapter that
`lofit.adapter.load_adapter` puts back on the backbone (or that merges into `o_proj` biases).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from lofit.backbone import Backbone
from lofit.data.examples import LossKind
from lofit.intervention import Head, HeadIntervention
from lofit.training.config import TuningConfig
from lofit.training.heads import choose_heads
from lofit.training.module import InterventionModule

ADAPTER_DIR = "adapter"


class BiasTuningModule(InterventionModule):
    """Trains per-head offsets v on the top-K heads of `config.heads`; exports `adapter/`.

    Args:
        backbone: the frozen model; must have the geometry recorded in the heads file.
        loss: the task's loss kind (`sft` or `dpo`).
        config: heads file, K, learning rate, initialisation and checkpoint choice.
        output_dir: where rank 0 writes the adapter at the end of fit.
        top_heads: the K heads with their scores, when the caller has already resolved them
            (`lofit.training.heads.choose_heads`); else they are chosen here from `config`.
    """

    def __init__(
        self,
        backbone: Backbone,
        loss: LossKind,
        config: TuningConfig,
        output_dir: str | Path | None = None,
        top_heads: Sequence[tuple[Head, float]] | None = None,
    ) -> None:
        if top_heads is None:
            top_heads = choose_heads(config.heads, config.top_k, backbone.name, backbone.geometry)
        top = list(top_heads)
        generator = torch.Generator().manual_seed(config.seed)
        intervention = HeadIntervention(
            backbone.geometry,
            components=("offset",),
            heads=[head for head, _ in top],
            init_std=config.init_std,
            generator=generator,
        )
        super().__init__(backbone, intervention, loss, config, output_dir)
        self.head_scores = [score for _, score in top]

    def export(self, out_dir: Path) -> None:
        from lofit.adapter import save_adapter

        save_adapter(
            self.intervention,
            out_dir / ADAPTER_DIR,
            base_model=self.backbone.name,
            head_scores=self.head_scores,
            model_type=self.backbone.model.config.model_type,
            extra={"heads_file": str(self.config.heads), "top_k": len(self.head_scores)},
            prompt_format=self.backbone.prompt_format,
        )

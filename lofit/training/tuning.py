"""Step 2 of LoFiT: learn offsets v on the top-K heads of a step-1 ranking.

Starts again from the base model (the step-1 scales are discarded); only the chosen heads have
trainable entries, every other head's offset stays exactly 0. The product is an adapter that
`lofit.adapter.load_adapter` puts back on the backbone (or that merges into `o_proj` biases).
"""

from __future__ import annotations

from pathlib import Path

import torch

from lofit.backbone import Backbone
from lofit.data.examples import LossKind
from lofit.intervention import HeadIntervention
from lofit.training.config import TuningConfig
from lofit.training.heads import read_heads, resolve_top_k
from lofit.training.module import InterventionModule

ADAPTER_DIR = "adapter"


class BiasTuningModule(InterventionModule):
    """Trains per-head offsets v on the top-K heads of `config.heads`; exports `adapter/`.

    Args:
        backbone: the frozen model; must have the geometry recorded in the heads file.
        loss: the task's loss kind (`sft` or `dpo`).
        config: heads file, K, learning rate, initialisation and checkpoint choice.
        output_dir: where rank 0 writes the adapter at the end of fit.
    """

    def __init__(
        self,
        backbone: Backbone,
        loss: LossKind,
        config: TuningConfig,
        output_dir: str | Path | None = None,
    ) -> None:
        ranking = read_heads(config.heads, backbone.name, backbone.geometry)
        top = ranking.top(resolve_top_k(config.top_k, backbone.geometry.num_total_heads))
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
        )

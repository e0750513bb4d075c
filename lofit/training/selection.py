"""Step 1 of LoFiT: find the heads that matter for a task.

A scale A is trained on every head (v stays 0) with the loss `task + λ·Σ|A|`; the L1 term pushes
the scales of heads the task does not need to 0, so ‖A_{l,i}‖₂ ranks the heads.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lofit.backbone import Backbone
from lofit.data.examples import LossKind
from lofit.intervention import HeadIntervention
from lofit.losses import l1_norm
from lofit.training.config import SelectionConfig
from lofit.training.heads import HeadRanking, write_heads, write_heatmap
from lofit.training.module import InterventionModule, Logs

HEADS_FILE = "heads.json"
HEATMAP_FILE = "heads.png"


class HeadSelectionModule(InterventionModule):
    """Trains per-head scales A with an L1 penalty; exports `heads.json` and `heads.png`.

    Args:
        backbone: the frozen model.
        loss: the task's loss kind (`sft` or `dpo`).
        config: learning rate, λ, initialisation and checkpoint choice.
        output_dir: where rank 0 writes the ranking at the end of fit.
        task_name: recorded in the heads file.
    """

    def __init__(
        self,
        backbone: Backbone,
        loss: LossKind,
        config: SelectionConfig | None = None,
        output_dir: str | Path | None = None,
        task_name: str | None = None,
    ) -> None:
        config = config or SelectionConfig()
        generator = torch.Generator().manual_seed(config.seed)
        intervention = HeadIntervention(
            backbone.geometry, components=("scale",), init_std=config.init_std, generator=generator
        )
        super().__init__(backbone, intervention, loss, config, output_dir)
        self.task_name = task_name

    def penalty(self) -> tuple[torch.Tensor, Logs]:
        norm = l1_norm(self.intervention.masked("scale"))
        return self.config.l1_lambda * norm, {"l1_norm": norm}

    def ranking(self) -> HeadRanking:
        """Every head scored by ‖A‖₂ of the current scales."""
        backbone = self.backbone
        return HeadRanking.from_scale(self.intervention.scale, backbone.name, backbone.geometry, self.task_name)

    def export(self, out_dir: Path) -> None:
        ranking = self.ranking()
        write_heads(out_dir / HEADS_FILE, ranking)
        write_heatmap(out_dir / HEATMAP_FILE, ranking)

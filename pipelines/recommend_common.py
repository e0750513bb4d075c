"""What the recommendation study's stages (recommend/dvc.yaml) share: the active plan, where each
stage writes, how LoFiT and LoRA train on a few-shot MovieLens set, and how an edit is scored.

The study follows TALLRec (Bao et al., 2023) on the task `movielens` under the comparison
protocol (pipelines/comparison/protocol.py): equal epochs, the lr chosen on val AUC, seeds, and
intervals over test samples. Its settings are `recommend:` in params.yaml.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import EDIT_FOLDERS, MODEL_DIR, load_params
from comparison.protocol import VAL_FILE, choose_lr
from comparison.protocol import active_plan as protocol_plan, lr_label

from lofit.backbone import BackboneConfig
from lofit.io import write_json
from lofit.training.config import DataConfig, TaskSpec, TrainerConfig

TASK = "movielens"
METRICS = ["auc"]  # the lr is chosen on val AUC
TRAINED = ("lofit", "lora")
BASE = "base"
RUNS = Path("recommend/runs")
INFO_FILE = "info.json"


def active_plan(params: dict[str, Any]) -> dict[str, Any]:
    """The recommend plan for model.device (`comparison.protocol.active_plan`)."""
    return protocol_plan(params, "recommend", "rec_{kind}_plan")


def grid_size_for(plan: dict[str, Any], size: int) -> int:
    """The training size whose grid chooses the lr of `size`: itself when it has a grid, else the
    grid size nearest on a log scale (ties: the smaller)."""
    sizes = sorted(plan["grid_sizes"])
    if not sizes:
        raise SystemExit("params.yaml: recommend.plan.grid_sizes is empty: no size can choose an lr")
    return min(sizes, key=lambda g: (abs(math.log(g) - math.log(size)), g))


def grid_point(method: str, size: int, lr: float) -> Path:
    """recommend/runs/grid/METHOD/nSIZE/lrLR: one grid point (training folder, val/ and val.json)."""
    return RUNS / "grid" / method / f"n{size}" / lr_label(lr)


def run_dir(method: str, size: int | None = None, seed: int | None = None) -> Path:
    """recommend/runs/base, or recommend/runs/METHOD/nSIZE-sSEED: one scored test run."""
    return RUNS / BASE if method == BASE else RUNS / method / f"n{size}-s{seed}"


def fresh(folder: Path) -> Path:
    """An empty `folder` (a stage's outputs start clean)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def _capped(*values: int | None) -> int | None:
    caps = [value for value in values if value is not None]
    return min(caps) if caps else None


@dataclass
class Study:
    """The study's settings read once from params.yaml (the profile caps limits and epochs)."""

    params: dict[str, Any]

    @property
    def settings(self) -> dict[str, Any]:
        return self.params["recommend"]

    @property
    def plan(self) -> dict[str, Any]:
        return active_plan(self.params)

    @property
    def profile(self) -> dict[str, Any]:
        return self.params["profiles"][self.params["profile"]]

    @property
    def seed(self) -> int:
        return int(self.params["seed"])

    def limit(self, split: str) -> int | None:
        """Samples scored on val / test: the plan's first-N limit, capped by the profile's."""
        if split == "val":
            return _capped(self.plan["val_limit"], self.profile.get("val_limit"))
        return _capped(self.plan["test_limit"], self.profile.get("eval_limit"))

    def task(self, size: int, seed: int) -> TaskSpec:
        """`movielens` with a few-shot set of `size` samples drawn with `seed` (0: all of train)."""
        return TaskSpec(name=TASK, data_dir=self.settings["data_dir"], options={"train_size": size, "seed": seed})

    def backbone(self) -> BackboneConfig:
        model = self.params["model"]
        return BackboneConfig(model=MODEL_DIR, dtype=model["dtype"], device=model["device"],
                              quantization=model["quantization"])

    def data(self) -> DataConfig:
        train = self.params["train"]
        return DataConfig(batch_size=train["batch_size"], eval_batch_size=train["batch_size"],
                          max_length=train["max_length"], max_prompt_length=train["max_prompt_length"],
                          val_limit=self.settings["val_loss_limit"])

    def trainer(self) -> TrainerConfig:
        train = self.params["train"]
        epochs = self.profile.get("tune_epochs", self.settings["epochs"])
        return TrainerConfig(max_epochs=epochs, accelerator=train["accelerator"], devices=train["devices"],
                             strategy=train["strategy"], precision=train["precision"])

    def train(self, method: str, size: int, lr: float, seed: int, out: Path) -> Path:
        """Train `method` at `lr` on the `size`-sample set of `seed`; returns the folder holding its edit
        and metrics.json. LoFiT: step 1 (out/select) then step 2 on its top heads (out/tune)."""
        from lofit.cli import select, tune
        from lofit.methods.commands import lora
        from lofit.methods.configs import LoRAStepConfig
        from lofit.training.config import SelectionConfig, TuningConfig

        common = dict(task=self.task(size, seed), backbone=self.backbone(), data=self.data(), trainer=self.trainer())
        if method == "lofit":
            step1 = self.settings["lofit"]["select"]
            select(selection=SelectionConfig(lr=step1["lr"], l1_lambda=step1["l1_lambda"], seed=seed),
                   output_dir=str(out / "select"), **common)
            shutil.rmtree(out / "select" / "checkpoints", ignore_errors=True)
            tuning = TuningConfig(heads=str(out / "select" / "heads.json"), top_k=self.settings["lofit"]["top_k"],
                                  lr=lr, seed=seed)
            tune(tuning=tuning, output_dir=str(trained_dir(out, method)), **common)
        elif method == "lora":
            lora(lora=LoRAStepConfig(**self.settings["lora"], lr=lr, seed=seed), output_dir=str(trained_dir(out, method)),
                 **common)
        else:
            raise SystemExit(f"unknown trained method {method!r} (have {TRAINED})")
        train_dir = trained_dir(out, method)
        shutil.rmtree(train_dir / "checkpoints", ignore_errors=True)  # only for resuming; the edit is exported
        return train_dir

    def score(self, edit: Path | None, split: str, out: Path) -> dict[str, Any]:
        """Score `edit` (None: the base model) on the first `limit(split)` samples of `split` into `out`."""
        from lofit.cli import evaluate

        return evaluate(task=self.task(0, self.seed), adapter=None if edit is None else str(edit),
                        backbone=self.backbone(), split=split, limit=self.limit(split),
                        batch_size=self.params["eval"]["batch_size"], output_dir=str(out))

    def score_val(self, edit: Path, out: Path) -> dict[str, Any]:
        """A grid point's val score: predictions in out/val/, the summary in out/val.json."""
        summary = self.score(edit, "val", out / "val")
        write_json(out / VAL_FILE, {**summary, "split": "val"})
        return summary

    def chosen_lr(self, method: str, size: int) -> tuple[float, int, list[dict[str, Any]]]:
        """The lr of `method` at `size` chosen on val AUC, the grid size it came from, and the grid's rows."""
        grid_size = grid_size_for(self.plan, size)
        grid = self.plan["lr_grid"][method]
        lr, rows = choose_lr(RUNS / "grid" / method / f"n{grid_size}", grid, METRICS)
        return lr, grid_size, rows


def trained_dir(out: Path, method: str) -> Path:
    """Where `Study.train` leaves the run whose edit is scored: LoFiT's step 2, LoRA's only step."""
    return out / ("tune" if method == "lofit" else "train")


def edit_of(train_dir: Path, method: str) -> Path:
    return train_dir / EDIT_FOLDERS[method]


def write_info(out: Path, *, method: str, size: int, seed: int | None, train_dir: Path | None,
               choice: dict[str, Any] | None) -> None:
    """What the report reads about a run besides its predictions: method, size, seed, trained
    parameters (from the training run's metrics.json; 0 for the base model) and the lr choice."""
    parameters = 0 if train_dir is None else int(json.loads((train_dir / "metrics.json").read_text())["trainable_parameters"])
    write_json(out / INFO_FILE, {"method": method, "train_size": size, "seed": seed, "trainable_parameters": parameters,
                                 "choice": choice})


def study() -> Study:
    return Study(load_params())

"""Read params.yaml for one pipeline stage: the chosen profile's overrides applied, configs built.

Stage scripts stay thin: they name a run, and this module turns its params into the typed
configs that the `lofit` CLI functions take.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lofit.backbone import BackboneConfig
from lofit.training.config import DataConfig, TaskSpec, TrainerConfig

PARAMS_FILE = Path("params.yaml")
MODEL_DIR = "data/models/base"
RAW_DIR = "data/raw"
RUNS_DIR = Path("runs")


def load_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    params = yaml.safe_load(path.read_text(encoding="utf-8"))
    profile = params["profile"]
    if profile not in params["profiles"]:
        raise SystemExit(f"{path}: profile '{profile}' is not one of {sorted(params['profiles'])}")
    return params


@dataclass
class RunParams:
    """Everything a stage needs about one run (a task, or one TruthfulQA fold)."""

    name: str
    params: dict[str, Any]

    @property
    def run(self) -> dict[str, Any]:
        runs = self.params["runs"]
        if self.name not in runs:
            raise SystemExit(f"params.yaml: no run '{self.name}' under runs (have {sorted(runs)})")
        return runs[self.name]

    @property
    def profile(self) -> dict[str, Any]:
        return self.params["profiles"][self.params["profile"]]

    @property
    def dir(self) -> Path:
        return RUNS_DIR / self.name

    def task(self) -> TaskSpec:
        return TaskSpec(name=self.run["task"], data_dir=RAW_DIR, options=dict(self.run.get("options") or {}))

    def backbone(self) -> BackboneConfig:
        model = self.params["model"]
        return BackboneConfig(
            model=MODEL_DIR, dtype=model["dtype"], device=model["device"], quantization=model["quantization"]
        )

    def data(self) -> DataConfig:
        train = self.params["train"]
        return DataConfig(
            batch_size=train["batch_size"],
            eval_batch_size=train["batch_size"],
            max_length=train["max_length"],
            max_prompt_length=train["max_prompt_length"],
            train_limit=self.profile.get("train_limit"),
            val_limit=self.profile.get("val_limit"),
        )

    def trainer(self, step: str) -> TrainerConfig:
        train = self.params["train"]
        epochs = self.profile.get(f"{step}_epochs", self.run[step]["epochs"])
        return TrainerConfig(
            max_epochs=epochs,
            accelerator=train["accelerator"],
            devices=train["devices"],
            strategy=train["strategy"],
            precision=train["precision"],
        )

    @property
    def eval_limit(self) -> int | None:
        return self.profile.get("eval_limit")


def run_params(name: str) -> RunParams:
    return RunParams(name, load_params())

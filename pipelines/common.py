"""What every pipeline stage shares (dvc.yaml and compare/dvc.yaml): params, paths, artifacts.

Stage scripts stay thin: they name a run, and this module turns its params into the typed
configs that the `lofit` CLI functions take, says where each stage writes, and reads back what
earlier stages recorded (the head count of an adapter comes from the adapter, not from params).
A stage imports shared code from here only, never from another stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lofit.threads import prefer_passive_omp_wait

prefer_passive_omp_wait()  # every torch stage imports this module before torch

from lofit.backbone import BackboneConfig  # noqa: E402
from lofit.methods.registry import METHODS  # noqa: E402
from lofit.training.config import DataConfig, TaskSpec, TrainerConfig  # noqa: E402

PARAMS_FILE = Path("params.yaml")
MODEL_DIR = "data/models/base"
RAW_DIR = "data/raw"
RUNS_DIR = Path("runs")
COMPARE_RUNS = Path("compare/runs")
REPORTS = Path("reports")
OOD_TASKS = ("triviaqa", "nq_open", "mmlu")
# the edit folder each method's command writes inside its output folder (from the method registry)
EDIT_FOLDERS = {name: method.edit_dir for name, method in METHODS.items()}


def limit_for(params: dict[str, Any], section: str, key: str = "limit") -> int | None:
    """Examples to score in a slow evaluation stage (None = the full set).

    `params[section][key]` is `{cpu: N, cuda: M}` by the backbone's device kind; the active
    profile may cap it with `<section>_<key>` (e.g. `quick: {ood_limit: 8}`), so a smoke profile
    shortens every stage through this one rule.
    """
    limits = params[section][key]
    kind = "cuda" if str(params["model"]["device"]).startswith("cuda") else "cpu"
    if kind not in limits:
        raise SystemExit(f"params.yaml: {section}.{key} has no '{kind}' entry")
    cap = params["profiles"][params["profile"]].get(f"{section}_{key}")
    caps = [value for value in (limits[kind], cap) if value is not None]
    return min(caps) if caps else None


def metric_names(task: str) -> list[str]:
    """The metrics the reports show for a task: MC1 and MC2 for TruthfulQA, else its primary metric."""
    from lofit.tasks import TASKS

    return ["mc1", "mc2"] if task == "truthfulqa" else [TASKS[task].primary_metric]


def adapter_heads(tune_dir: Path) -> tuple[int, int]:
    """Heads a step-2 run edited and the model's number of heads, from its `adapter/` config."""
    from lofit.adapter import read_adapter_config

    folder = tune_dir / EDIT_FOLDERS["lofit"]
    if not (folder / METHODS["lofit"].edit.config_file).is_file():
        raise SystemExit(f"{folder / METHODS['lofit'].edit.config_file}: missing; it is written by LoFiT step 2 into {tune_dir}")
    config = read_adapter_config(folder)
    return len(config.heads), config.geometry.num_total_heads


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

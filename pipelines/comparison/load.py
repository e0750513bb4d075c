"""What the comparison report reads: the compare stages' evaluations and the main study's runs.

`Study` rescores the main base and LoFiT predictions on the compare stages' test prefix (through
the evaluators' own metrics), reads each experiment's summary and info, and the main runs' heads
and adapters; every missing file is a one-line error naming the stage that writes it.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from common import COMPARE_RUNS, MODEL_DIR, RUNS_DIR, RunParams, adapter_heads
from compare_common import eval_limit
from comparison.tables import Result

from lofit.evaluation.rescore import rescore
from lofit.io import read_json
from lofit.tasks import TASKS
from lofit.training.heads import HeadRanking

def prefix_metrics(predictions_path: Path, task: str, limit: int | None) -> dict[str, float]:
    """The task's summary over the first `limit` rows of a predictions.jsonl (None = all rows), scored as
    its evaluator scores (`lofit.evaluation.rescore`)."""
    rows = []
    with Path(predictions_path).open(encoding="utf-8") as handle:
        for line in handle:
            if limit is not None and len(rows) >= limit:
                break
            if line.strip():
                rows.append(json.loads(line))
    if not rows:
        raise SystemExit(f"{predictions_path}: no predictions")
    return rescore(rows, TASKS[task].primary_metric)


def need(path: Path, stage: str) -> Path:
    """`path`, or a one-line error naming it and the stage that writes it."""
    if not path.is_file():
        raise SystemExit(f"{path}: missing; it is written by {stage}")
    return path


def compare_stage(stage: str) -> str:
    return f"stage {stage} of compare/dvc.yaml"


def model_parameters(folder: Path = Path(MODEL_DIR)) -> int | None:
    """Parameter count of the base model from its safetensors headers (None if it is not here)."""
    total = 0
    for path in sorted(folder.glob("*.safetensors")):
        with path.open("rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(size))
        total += sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")
    return total or None


class Study:
    """The params, the compare outputs, and the main study's rows rescored on the compare prefix."""

    def __init__(self, params: dict) -> None:
        self.params, self.compare = params, params["compare"]
        # the compare stages' own test prefix (device kind, capped by the profile): the same for every run
        self.limit: int | None = eval_limit(RunParams(next(iter(params["runs"])), params))
        self.seeds: list[int] = list(self.compare["seeds"])
        if not self.seeds:
            raise SystemExit("params.yaml: compare.seeds is empty")
        self._main: dict[str, tuple[Result, Result]] = {}

    def configured(self, section: str) -> list[str]:
        return list((self.compare.get(section) or {}).get("runs") or [])

    def train_examples(self, run: str) -> int:
        """Training examples the main run saw: the task's train split, capped by the profile's limit."""
        from lofit.training.run import build_task

        params = RunParams(run, self.params)
        count = len(build_task(params.task()).examples("train"))
        limit = params.profile.get("train_limit")
        return count if limit is None else min(count, limit)

    def task(self, run: str) -> str:
        if run not in self.params["runs"]:
            raise SystemExit(f"params.yaml: compare names run '{run}', which is not under runs ({sorted(self.params['runs'])})")
        return self.params["runs"][run]["task"]

    def main(self, run: str) -> tuple[Result, Result]:
        """Base and LoFiT on the prefix: the main run (seed `seed`) plus compare.lofit's extra seeds."""
        if run not in self._main:
            base, lofit = (
                {self.params["seed"]: prefix_metrics(need(RUNS_DIR / run / "eval" / m / "predictions.jsonl",
                                                          f"stage evaluate_{m}@{run} of dvc.yaml"), self.task(run), self.limit)}
                for m in ("base", "lofit")
            )
            self._main[run] = base, lofit  # cached before the extra seeds, whose check reads the example count
            if run in self.configured("lofit"):
                lofit.update(self.seeded(run, "lofit-s{seed}", "lofit_seeds", self.compare["lofit"].get("seeds") or []))
        return self._main[run]

    def examples(self, run: str) -> int:
        return next(iter(self.main(run)[0].values()))["num_examples"]

    def summary(self, directory: Path, stage: str, examples: int) -> dict:
        """A compare evaluation's summary.json, checked to score `examples` test rows."""
        summary = read_json(need(directory / "summary.json", compare_stage(stage)))
        if summary.get("num_examples", examples) != examples:
            raise SystemExit(f"{directory}/summary.json scored {summary['num_examples']} examples, the main rows {examples}: "
                             f"rerun {compare_stage(stage)}")
        return summary

    def info(self, run: str, name: str, stage: str) -> dict:
        return read_json(need(COMPARE_RUNS / run / name / "info.json", compare_stage(stage)))

    def seeded(self, run: str, name: str, stage: str, seeds: list[int] | None = None) -> Result:
        """One compare experiment of `run` per seed; `name` is its folder with a `{seed}` field."""
        return {seed: self.summary(COMPARE_RUNS / run / name.format(seed=seed), stage, self.examples(run))
                for seed in (self.seeds if seeds is None else seeds)}

    def single(self, run: str, name: str, stage: str) -> tuple[Result, dict]:
        """A compare experiment fitted once (ITI, RepE: no seed in info.json), keyed by the main seed."""
        info = self.info(run, name, stage)
        seed = self.params["seed"] if info.get("seed") is None else info["seed"]
        return {seed: self.summary(COMPARE_RUNS / run / name, stage, self.examples(run))}, info

    def tune_metrics(self, run: str) -> dict:
        return read_json(need(RUNS_DIR / run / "tune" / "metrics.json", f"stage tune_biases@{run} of dvc.yaml"))

    def ranking(self, run: str) -> HeadRanking:
        path = need(RUNS_DIR / run / "select" / "heads.json", f"stage select_heads@{run} of dvc.yaml")
        return HeadRanking.from_json(read_json(path), source=str(path))

    def top_k(self, run: str) -> tuple[int, int]:
        """The main run's step-2 head count K (as its adapter records it) and the model's number of heads."""
        return adapter_heads(RUNS_DIR / run / "tune")

    def heads(self, run: str) -> str:
        k, total = self.top_k(run)
        return f"K={k}, {100 * k / total:.0f} % of heads"

    def scope(self, runs: list[str]) -> str:
        first = f"the first {self.limit}" if self.limit is not None else "all"
        return f"{first} test examples ({'/'.join(str(self.examples(r)) for r in runs)} for {', '.join(runs)})"

"""What the comparison report reads: the compare stages' evaluations and the main study's runs.

`Study` rescores predictions through the evaluators' own metrics, reads each experiment's summary,
per-example outcomes and info, the lr grids' val scores, and the main runs' heads and adapters;
every missing file is a one-line error naming the stage that writes it. Tables 1 and 3 read full
test sets (`full=True`); the ablations and the frontier read every row on the first `compare.eval_limit` test examples, LoFiT's included (its Table rows at the lr chosen
on val, never the main run).
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from common import COMPARE_RUNS, MODEL_DIR, RUNS_DIR, RunParams, adapter_heads, metric_names
from compare_common import active_plan, chosen_lr, eval_limit
from comparison.protocol import choose, lr_label, per_example
from comparison.tables import Result

from lofit.evaluation.rescore import rescore
from lofit.io import read_json
from lofit.tasks import TASKS
from lofit.training.heads import HeadRanking


def read_rows(predictions_path: Path, limit: int | None) -> list[dict]:
    """The first `limit` rows of a predictions.jsonl (None = all rows)."""
    rows = []
    with Path(predictions_path).open(encoding="utf-8") as handle:
        for line in handle:
            if limit is not None and len(rows) >= limit:
                break
            if line.strip():
                rows.append(json.loads(line))
    if not rows:
        raise SystemExit(f"{predictions_path}: no predictions")
    return rows


def outcomes(rows: list[dict], metrics: list[str]) -> dict[str, list[float]]:
    return {m: per_example(rows, m) for m in metrics}


def prefix_metrics(predictions_path: Path, task: str, limit: int | None) -> dict[str, float]:
    """The task's summary over the first `limit` rows of a predictions.jsonl (None = all rows), scored as
    its evaluator scores (`lofit.evaluation.rescore`)."""
    return rescore(read_rows(predictions_path, limit), TASKS[task].primary_metric)


def scored(predictions_path: Path, task: str, limit: int | None) -> dict:
    """`prefix_metrics` with the per-example outcomes of the report's metrics."""
    rows = read_rows(predictions_path, limit)
    return {**rescore(rows, TASKS[task].primary_metric), "outcomes": outcomes(rows, metric_names(task))}


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
        self.params, self.compare = params, active_plan(params)
        first = RunParams(next(iter(params["runs"])), params)
        # the ablations' test prefix (device kind, capped by the profile) and the tables' full sets
        self.limit: int | None = eval_limit(first)
        self.full_limit: int | None = first.eval_limit
        self.seeds: list[int] = list(self.compare["seeds"])
        self.ablation_seeds: list[int] = list(self.compare["ablation_seeds"])
        if not self.seeds or not self.ablation_seeds:
            raise SystemExit("params.yaml: compare.plan.seeds and compare.plan.ablation_seeds must not be empty")
        self._main: dict[tuple[str, bool], tuple[Result, Result]] = {}

    def configured(self, section: str, key: str = "runs") -> list:
        """The active plan's `section.key` list (its runs by default; [] when the plan has none)."""
        return list((self.compare.get(section) or {}).get(key) or [])

    def left_out(self, section: str, what: str = "", key: str = "runs") -> str:
        """The values of `section.key` (its runs, sweep points, sizes or methods) that the GPU plan has and
        the active plan lacks, as a caption sentence ('' if none)."""
        gpu = (self.params["compare"]["plans"].get("gpu") or {}).get(section) or {}
        active = self.configured(section, key)
        missing = ", ".join(str(value) for value in gpu.get(key) or [] if value not in active)
        if not missing:
            return ""
        return f" The CPU plan leaves out {what or section} {'on ' if key == 'runs' else ''}{missing} (GPU plan only)."

    def plan_note(self) -> str:
        """Seeds and grid sizes of the active plan against the GPU plan, for the report's header."""
        gpu = self.params["compare"]["plans"].get("gpu") or {}
        grids = {method: len(values) for method, values in self.compare["lr_grid"].items()}
        note = (f"seeds {self.seeds} for Tables 1 and 3, {self.ablation_seeds} for the ablations; lr grids of "
                + ", ".join(f"{n} points ({method})" for method, n in grids.items()))
        if gpu and gpu != self.compare:
            note += (f". This is the CPU plan: the GPU plan (`compare.plan: *gpu_plan`) runs seeds {gpu.get('seeds')}, "
                     f"lr grids of {'/'.join(sorted({str(len(v)) for v in gpu.get('lr_grid', {}).values()}))} points and every "
                     "run its sections list; captions say what this plan leaves out")
        return note

    def grid(self, run: str, method: str) -> tuple[float, list[dict]]:
        """The lr chosen on val for `method` on `run` and the grid's val rows."""
        return chosen_lr(RunParams(run, self.params), method)

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

    def main(self, run: str, full: bool = False) -> tuple[Result, Result]:
        """Base (the main run's base evaluation, rescored) and LoFiT at the lr chosen on val (the
        `lofit@RUN-SEED` rows): every seed on the full test set (`full`), else the ablation seeds on
        the ablations' prefix, the reference every ablation is compared with."""
        if (run, full) not in self._main:
            if run not in self.configured("lofit"):
                raise SystemExit(f"params.yaml: compare.plan.lofit.runs lacks '{run}': its tables compare with LoFiT "
                                 "at the lr chosen on val (stage lofit of compare/dvc.yaml)")
            limit = self.full_limit if full else self.limit
            base = {self.params["seed"]: scored(need(RUNS_DIR / run / "eval" / "base" / "predictions.jsonl",
                                                     f"stage evaluate_base@{run} of dvc.yaml"), self.task(run), limit)}
            self._main[(run, full)] = base, {}  # cached before the seeded rows, whose check reads the example count
            lofit = self.seeded(run, "lofit-s{seed}", "lofit", full=True) if full else self.on_prefix(run, "lofit-s{seed}", "lofit")
            self._main[(run, full)] = base, lofit
        return self._main[(run, full)]

    def on_prefix(self, run: str, name: str, stage: str) -> Result:
        """A Table 1/3 experiment (scored on the full test set, `name` with a `{seed}` field) read on
        the ablations' prefix for the ablation seeds, so that ablations and tables share a reference."""
        missing = [seed for seed in self.ablation_seeds if seed not in self.seeds]
        if missing:
            raise SystemExit(f"params.yaml: compare.plan.ablation_seeds {missing} are not in compare.plan.seeds: "
                             f"the ablations read the Table rows ({name}) of their seeds")
        return {seed: scored(need(COMPARE_RUNS / run / name.format(seed=seed) / "predictions.jsonl", compare_stage(stage)),
                             self.task(run), self.limit) for seed in self.ablation_seeds}

    def single_on_prefix(self, run: str, name: str, stage: str) -> Result:
        """A once-fitted Table 1 experiment (ITI, RepE) read on the ablations' prefix, keyed by the main seed."""
        rows = need(COMPARE_RUNS / run / name / "predictions.jsonl", compare_stage(stage))
        return {self.params["seed"]: scored(rows, self.task(run), self.limit)}

    def main_seed_of_ablations(self) -> int:
        """The seed whose val scores choose among ablation settings (the main seed, one seed as for the lr)."""
        seed = self.params["seed"]
        if seed not in self.ablation_seeds:
            raise SystemExit(f"params.yaml: compare.plan.ablation_seeds {self.ablation_seeds} lacks the main seed {seed}, "
                             "whose val scores choose K")
        return seed

    def k_choice(self, run: str) -> tuple[str, dict[str, int], list[dict]]:
        """K chosen on val at LoFiT's chosen lr among the main run's K and the sweep's (`k_sweep` labels
        `kTOPK`, `main` for the main K): the choice, each label's head count, the val rows."""
        lr = self.grid(run, "lofit")[0]
        seed = self.main_seed_of_ablations()
        folders = {"main": COMPARE_RUNS / run / "grid-lofit" / lr_label(lr)}
        heads = {"main": self.top_k(run)[0]}
        for k in self.compare["k_sweep"]["top_k"]:
            folders[f"k{k}"] = COMPARE_RUNS / run / f"k{k}-s{seed}"
            heads[f"k{k}"] = self.info(run, f"k{k}-s{seed}", "k_sweep")["top_k"]
        chosen, rows = choose(folders, metric_names(self.task(run)))
        return chosen, heads, rows

    def examples(self, run: str, full: bool = False) -> int:
        return next(iter(self.main(run, full)[0].values()))["num_examples"]

    def summary(self, directory: Path, stage: str, examples: int, task: str | None = None) -> dict:
        """A compare evaluation's summary.json, checked to score `examples` test rows, with the
        per-example outcomes of its predictions.jsonl (when `task` is given)."""
        summary = read_json(need(directory / "summary.json", compare_stage(stage)))
        if summary.get("num_examples", examples) != examples:
            raise SystemExit(f"{directory}/summary.json scored {summary['num_examples']} examples, the main rows {examples}: "
                             f"rerun {compare_stage(stage)}")
        if task is None:
            return summary
        rows = read_rows(need(directory / "predictions.jsonl", compare_stage(stage)), None)
        if len(rows) != examples:
            raise SystemExit(f"{directory}/predictions.jsonl holds {len(rows)} rows, its summary {examples}")
        return {**summary, "outcomes": outcomes(rows, metric_names(task))}

    def info(self, run: str, name: str, stage: str) -> dict:
        return read_json(need(COMPARE_RUNS / run / name / "info.json", compare_stage(stage)))

    def seeded(self, run: str, name: str, stage: str, full: bool = False) -> Result:
        """One compare experiment of `run` per seed (Tables 1/3: `seeds` on the full test set; else
        `ablation_seeds` on the prefix); `name` is its folder with a `{seed}` field."""
        seeds = self.seeds if full else self.ablation_seeds
        return {seed: self.summary(COMPARE_RUNS / run / name.format(seed=seed), stage, self.examples(run, full), self.task(run))
                for seed in seeds}

    def single(self, run: str, name: str, stage: str) -> tuple[Result, dict]:
        """A compare experiment fitted once on the full test set (ITI, RepE: no seed in info.json), keyed by the main seed."""
        info = self.info(run, name, stage)
        seed = self.params["seed"] if info.get("seed") is None else info["seed"]
        return {seed: self.summary(COMPARE_RUNS / run / name, stage, self.examples(run, True), self.task(run))}, info

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

    def scope(self, runs: list[str], full: bool = False) -> str:
        limit = self.full_limit if full else self.limit
        first = f"the first {limit}" if limit is not None else "all"
        return f"{first} test examples ({'/'.join(str(self.examples(r, full)) for r in runs)} for {', '.join(runs)})"

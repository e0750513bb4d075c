"""The comparison protocol (issue 13), one implementation for every table of every study.

- Tuning: a method's learning rate is the grid value with the best task metric on the val split
  (`choose`), read from the grid stages' `val.json` files only; the test split never enters.
- Cells: per-example outcomes of every seed on the same test examples. The cell is the mean ±
  sample sd of the seeds' means (n = seeds) and a 95 % bootstrap interval over test examples of
  the seed-averaged per-example outcome (`cell`).
- Claims: "A beats B" only when a paired test on the same examples gives p < 0.05 (`paired_p`:
  McNemar's exact test for right/wrong outcomes of one seed each, else the paired bootstrap of the
  seed-averaged outcomes, as for MC2); otherwise the sentence says "not significant" (`claim`).

Nothing here loads a model: a study (the MovieLens one too) passes its files and outcomes in.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lofit.evaluation.stats import bootstrap_mean_ci, mcnemar_exact_p, paired_bootstrap_p_value

VAL_FILE = "val.json"  # what a grid stage writes: the val-split summary of one grid point
ALPHA = 0.05
CONFIDENCE = 0.95


def active_plan(params: Mapping[str, Any], section: str, anchor: str) -> dict[str, Any]:
    """`params[section].plans[gpu|cpu]` for model.device; `params[section].plan` (what the study's
    dvc.yaml expands) must be that plan, else the error names the YAML anchor to point it at
    (`anchor` with `{kind}`, e.g. `{kind}_plan`)."""
    block, device = params[section], str(params["model"]["device"])
    kind = "gpu" if device.startswith("cuda") else "cpu"
    if kind not in block["plans"]:
        raise SystemExit(f"params.yaml: {section}.plans has no '{kind}' plan (model.device {device})")
    plan = block["plans"][kind]
    if block["plan"] != plan:
        raise SystemExit(f"params.yaml: {section}.plan is not {section}.plans.{kind}, the plan for model.device "
                         f"{device!r}: set `plan: *{anchor.format(kind=kind)}`")
    return plan


def lr_label(lr: float) -> str:
    """The folder of one grid point: `lr` + str(value), exactly as DVC renders `${item.lr}`."""
    return f"lr{float(lr)}"


def read_val(folder: Path) -> dict[str, Any]:
    """A grid point's val summary; refused unless it says it scored the val split."""
    path = Path(folder) / VAL_FILE
    if not path.is_file():
        raise SystemExit(f"{path}: missing; it is written by the grid stage of compare/dvc.yaml")
    summary = json.loads(path.read_text(encoding="utf-8"))
    if summary.get("split") != "val":
        raise SystemExit(f"{path}: scored split {summary.get('split')!r}, not val")
    return summary


def choose(candidates: Mapping[Any, Path], metrics: Sequence[str]) -> tuple[Any, list[dict[str, Any]]]:
    """The candidate whose val summary is best on `metrics` (compared in order; ties: the first
    listed), and one row per candidate (its value and val scores) for the report."""
    rows = [{"value": value, **{m: read_val(folder)[m] for m in metrics}} for value, folder in candidates.items()]
    if not rows:
        raise SystemExit("an empty grid has no choice")
    best = max(range(len(rows)), key=lambda i: (tuple(rows[i][m] for m in metrics), -i))
    return rows[best]["value"], rows


def choose_lr(grid_dir: Path, grid: Sequence[float], metrics: Sequence[str]) -> tuple[float, list[dict[str, Any]]]:
    """The learning rate of `grid` chosen on val from the grid folders under `grid_dir`."""
    return choose({float(lr): Path(grid_dir) / lr_label(lr) for lr in grid}, metrics)


def per_example(rows: Sequence[Mapping[str, Any]], metric: str) -> list[float]:
    """One value per predictions row: the row's own `metric` (MC1/MC2/MC3), else its `correct` verdict."""
    return [float(row[metric]) if metric in row else float(bool(row["correct"])) for row in rows]


@dataclass(frozen=True)
class Cell:
    """One table cell: mean ± sd over seeds (n of them) and the bootstrap interval over examples."""

    mean: float
    sd: float | None
    n: int
    low: float
    high: float
    outcomes: tuple[float, ...]  # per-example outcome averaged over seeds (what paired tests use)
    binary: bool  # one seed of right/wrong outcomes: McNemar applies

    @property
    def examples(self) -> int:
        return len(self.outcomes)

    def text(self) -> str:
        sd = "—" if self.sd is None else f"{100 * self.sd:.1f}"
        return f"{100 * self.mean:.1f} ± {sd} (n={self.n}) [{100 * self.low:.1f}, {100 * self.high:.1f}]"

    def to_json(self) -> dict[str, Any]:
        out = {"mean": round(self.mean, 4), "n": self.n, "ci": [round(self.low, 4), round(self.high, 4)],
               "examples": self.examples}
        return out if self.sd is None else {**out, "sd": round(self.sd, 4)}


def cell(per_seed: Mapping[int, Sequence[float]]) -> Cell:
    """The cell of one method on one metric from each seed's per-example outcomes (same examples)."""
    if not per_seed:
        raise ValueError("a cell needs at least one seed")
    lengths = {len(values) for values in per_seed.values()}
    if len(lengths) != 1:
        raise ValueError(f"seeds scored different numbers of examples: {sorted(lengths)}")
    matrix = np.asarray([list(values) for values in per_seed.values()], dtype=np.float64)
    means = matrix.mean(axis=1)
    averaged = matrix.mean(axis=0)
    low, high = bootstrap_mean_ci(averaged, CONFIDENCE)
    binary = len(per_seed) == 1 and bool(np.isin(matrix, (0.0, 1.0)).all())
    return Cell(float(means.mean()), statistics.stdev(means) if len(means) > 1 else None, len(means),
                low, high, tuple(averaged.tolist()), binary)


def paired_p(a: Cell, b: Cell) -> tuple[float, str]:
    """Two-sided p of "a and b score the same" on the same examples, and the test's name."""
    if a.examples != b.examples:
        raise ValueError(f"cannot pair cells over {a.examples} and {b.examples} examples")
    if a.binary and b.binary:
        return mcnemar_exact_p([x > 0.5 for x in a.outcomes], [x > 0.5 for x in b.outcomes]), "McNemar"
    return paired_bootstrap_p_value(a.outcomes, b.outcomes), "paired bootstrap"


def claim(name: str, other: Cell, reference_name: str, reference: Cell, where: str) -> str:
    """The sentence the report may write about `name` vs `reference_name`: who beats whom only at p < 0.05."""
    p, test = paired_p(reference, other)

    def numbers(first: Cell, second: Cell) -> str:  # in the order the sentence names the methods
        return f"{100 * first.mean:.1f} vs {100 * second.mean:.1f} ({test} p = {p:.3g})"

    if p >= ALPHA:
        return f"{name} vs {reference_name} on {where}: not significant, {numbers(other, reference)}"
    if other.mean > reference.mean:
        return f"{name} beats {reference_name} on {where}: {numbers(other, reference)}"
    return f"{reference_name} beats {name} on {where}: {numbers(reference, other)}"

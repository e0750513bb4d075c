"""DVC stage `recommend_report` (recommend/dvc.yaml): reports/recommendation.md, .json and the curve
reports/recommendation/auc.png from the scored runs under recommend/runs/.

Every cell is the test AUC of one method at one training size: mean ± sd over seeds and a 95 %
stratified bootstrap interval over the test samples (AUC recomputed per resample; see
recommend_stats.py). LoFiT vs LoRA at each size is a paired bootstrap of the AUC difference on the
same samples; the report says who beats whom only at p < 0.05.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from comparison.protocol import ALPHA
from recommend_common import BASE, INFO_FILE, RUNS, TRAINED, Study, study
from recommend_stats import AUCCell, auc_cell, paired_auc_p

from lofit.io import atomic_path, write_json

REPORT = Path("reports/recommendation.md")
METRICS = Path("reports/recommendation.json")
CURVE = Path("reports/recommendation/auc.png")
NAMES = {BASE: "base (zero-shot)", "lofit": "LoFiT", "lora": "LoRA"}


def read_run(folder: Path) -> tuple[list[tuple[int, int]], list[bool], list[float], dict[str, Any]]:
    """A scored run's sample keys (user, item), labels, P(Yes) per sample and its info.json."""
    path = folder / "predictions.jsonl"
    if not path.is_file():
        raise SystemExit(f"{path}: missing; it is written by recommend/dvc.yaml's base / train stages")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    info = json.loads((folder / INFO_FILE).read_text(encoding="utf-8"))
    return ([(row["user"], row["item"]) for row in rows], [row["label"] == "Yes." for row in rows],
            [float(row["p_yes"]) for row in rows], info)


def claim(first: str, first_cell: AUCCell, second: str, second_cell: AUCCell, size: int) -> tuple[float, str]:
    """The paired p of `first` vs `second` at `size` and the sentence the report may write (a
    significant winner is named first, with its AUC first)."""
    p = paired_auc_p(first_cell, second_cell)
    if p < ALPHA and first_cell.mean <= second_cell.mean:
        (first, first_cell), (second, second_cell) = (second, second_cell), (first, first_cell)
    numbers = f"AUC {100 * first_cell.mean:.1f} vs {100 * second_cell.mean:.1f} (paired bootstrap p = {p:.3g})"
    if p >= ALPHA:
        return p, f"{first} vs {second} at {size} samples: not significant, {numbers}"
    return p, f"{first} beats {second} at {size} samples: {numbers}"


def build(rec: Study, root: Path = RUNS, resamples: int | None = None) -> dict[str, Any]:
    """Every cell, lr choice, trainable-parameter count and claim of the active plan."""
    plan = rec.plan
    options = {} if resamples is None else {"resamples": resamples}
    keys, labels, base_scores, _ = read_run(root / BASE)
    base = auc_cell([base_scores], labels, **options)
    cells: dict[str, dict[int, AUCCell]] = {method: {} for method in TRAINED}
    runs: dict[str, dict[int, dict[str, Any]]] = {method: {} for method in TRAINED}
    for method in TRAINED:
        for size in plan["train_sizes"]:
            per_seed, infos = [], []
            for seed in plan["seeds"]:
                folder = root / method / f"n{size}-s{seed}"
                run_keys, run_labels, scores, info = read_run(folder)
                if run_keys != keys:
                    raise SystemExit(f"{folder}: scored other test samples than {root / BASE}")
                per_seed.append(scores)
                infos.append(info)
            cells[method][size] = auc_cell(per_seed, labels, **options)
            runs[method][size] = {"lr": infos[0]["choice"]["lr"], "grid_size": infos[0]["choice"]["grid_size"],
                                  "grid": infos[0]["choice"]["grid"],
                                  "trainable_parameters": infos[0]["trainable_parameters"]}
    comparisons = {size: claim("LoFiT", cells["lofit"][size], "LoRA", cells["lora"][size], size) for size in plan["train_sizes"]}
    versus_base = {method: {size: claim(NAMES[method], cells[method][size], NAMES[BASE], base, size)
                            for size in plan["train_sizes"]} for method in TRAINED}
    return {"plan": plan, "plans": rec.settings["plans"], "test_samples": len(labels), "positives": sum(labels), "base": base, "cells": cells,
            "runs": runs, "comparisons": comparisons, "versus_base": versus_base, "val_limit": rec.limit("val"), "test_limit": rec.limit("test")}


def parameters_of(results: dict[str, Any], method: str) -> int:
    counts = {run["trainable_parameters"] for run in results["runs"][method].values()}
    if len(counts) != 1:
        raise SystemExit(f"{method}: trainable parameters differ across sizes: {sorted(counts)}")
    return counts.pop()


def plan_lines(plan: dict[str, Any], plans: dict[str, dict[str, Any]]) -> list[str]:
    """Which plan of `recommend.plans` this report ran, and what each other plan runs instead."""
    def scope(p: dict[str, Any]) -> str:
        splits = ", ".join(f"{'all' if p[f'{s}_limit'] is None else 'the first ' + str(p[f'{s}_limit'])} {s} samples"
                           for s in ("val", "test"))
        return f"sizes {p['train_sizes']}, seeds {p['seeds']}, lr grids at n = {p['grid_sizes']}, {splits}"
    name = next((kind for kind, other in plans.items() if other == plan), "?")
    others = [f"the `{kind}` plan runs {scope(other)}" for kind, other in plans.items() if other != plan]
    return [f"Plan `{name}` of `recommend.plans` in params.yaml: {scope(plan)}"
            + (f"; {'; '.join(others)}." if others else ".")
            + " A size without its own grid takes the lr chosen at the nearest grid size (log scale)."]


def markdown(results: dict[str, Any]) -> str:
    sizes, plan = results["plan"]["train_sizes"], results["plan"]
    head = "| method | trainable parameters | " + " | ".join(f"n = {size}" for size in sizes) + " |"
    lines = [head, "|" + " --- |" * (len(sizes) + 2)]
    lines.append(f"| {NAMES[BASE]} | 0 | " + " | ".join(results["base"].text() for _ in sizes) + " |")
    for method in TRAINED:
        lines.append(f"| {NAMES[method]} | {parameters_of(results, method):,} | "
                     + " | ".join(results["cells"][method][size].text() for size in sizes) + " |")
    lrs = [f"- {NAMES[method]} at n = {size}: lr {run['lr']:g} (chosen on the grid at n = {run['grid_size']}: "
           + ", ".join(f"{row['value']:g} → {100 * row['auc']:.1f}" for row in run["grid"]) + ")"
           for method in TRAINED for size, run in results["runs"][method].items()]
    test = "all" if results["test_limit"] is None else f"the first {results['test_limit']}"
    val = "all" if results["val_limit"] is None else f"the first {results['val_limit']}"
    return "\n".join([
        "# Recommendation: TALLRec's protocol on MovieLens-100K, LoFiT vs LoRA",
        "",
        f"Test AUC (%) of P(Yes) / (P(Yes) + P(No)) on {test} test samples (in time order; "
        f"{results['test_samples']} scored, {results['positives']} liked), by training samples n. "
        f"Cell: mean ± sd over seeds (n = seeds) [95 % stratified bootstrap interval over test samples, "
        f"AUC recomputed per resample]. Each seed draws its own training set. The lr of each method is "
        f"chosen by AUC on {val} val samples. Equal epochs: LoRA and each LoFiT step. Seeds: "
        f"{plan['seeds']}.",
        "",
        *plan_lines(plan, results["plans"]),
        "",
        *lines,
        "",
        "![AUC vs training samples](recommendation/auc.png)",
        "",
        "## LoFiT vs LoRA (paired bootstrap of the AUC difference on the same test samples)",
        "",
        *[f"- {sentence}" for _, sentence in results["comparisons"].values()],
        "",
        "## Against the zero-shot model (the same paired bootstrap)",
        "",
        *[f"- {sentence}" for by_size in results["versus_base"].values() for _, sentence in by_size.values()],
        "",
        "## Learning rates (val AUC % per grid value)",
        "",
        *lrs,
        "",
    ])


def to_json(results: dict[str, Any]) -> dict[str, Any]:
    return {
        "test_samples": results["test_samples"],
        "test_limit": results["test_limit"],
        "val_limit": results["val_limit"],
        "seeds": results["plan"]["seeds"],
        "base": results["base"].to_json(),
        "methods": {method: {"trainable_parameters": parameters_of(results, method),
                             "sizes": {str(size): {**cell.to_json(), "lr": results["runs"][method][size]["lr"],
                                                   "grid_size": results["runs"][method][size]["grid_size"]}
                                       for size, cell in results["cells"][method].items()}}
                    for method in TRAINED},
        "lofit_vs_lora": {str(size): {"p": round(p, 4), "claim": sentence}
                          for size, (p, sentence) in results["comparisons"].items()},
        "versus_base": {method: {str(size): {"p": round(p, 4), "claim": sentence} for size, (p, sentence) in by_size.items()}
                        for method, by_size in results["versus_base"].items()},
    }


def plot(results: dict[str, Any], path: Path = CURVE) -> None:
    """AUC vs training samples (log x): one line per method with its interval band, base as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = results["plan"]["train_sizes"]
    figure, axis = plt.subplots(figsize=(6, 4))
    base = results["base"]
    axis.axhline(100 * base.mean, color="grey", linestyle="--", label=f"{NAMES[BASE]} (0 params)")
    axis.axhspan(100 * base.low, 100 * base.high, color="grey", alpha=0.15)
    for method in TRAINED:
        cells = [results["cells"][method][size] for size in sizes]
        line = axis.plot(sizes, [100 * c.mean for c in cells], marker="o",
                         label=f"{NAMES[method]} ({parameters_of(results, method):,} params)")[0]
        axis.fill_between(sizes, [100 * c.low for c in cells], [100 * c.high for c in cells],
                          color=line.get_color(), alpha=0.2)
    axis.set_xscale("log")
    axis.set_xticks(sizes, [str(size) for size in sizes])
    axis.set_xlabel("training samples")
    axis.set_ylabel("test AUC (%)")
    axis.set_title("MovieLens-100K (TALLRec protocol), 95 % bootstrap bands")
    axis.legend()
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)


def write(results: dict[str, Any], report: Path = REPORT, metrics: Path = METRICS, curve: Path = CURVE) -> None:
    plot(results, curve)
    write_json(metrics, to_json(results))
    with atomic_path(report) as tmp:
        tmp.write_text(markdown(results), encoding="utf-8")


def main() -> None:
    write(build(study()))


if __name__ == "__main__":
    main()

"""DVC stage `report`: the results tables and training curves.

Reads every run's evaluation summaries, step-2 metrics and training logs, the out-of-domain
summaries and per-question predictions (paired base vs. LoFiT) and the open-ended judge summaries; writes reports/results.md, reports/metrics.json (a
DVC metric) and reports/curves/*.png.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from common import OOD_TASKS, REPORTS, RUNS_DIR, adapter_heads, load_params, metric_names  # noqa: E402

from comparison.protocol import per_example  # noqa: E402

from lofit.evaluation.stats import (  # noqa: E402
    RESAMPLES,
    SEED,
    bootstrap_mean_ci,
    check_paired,
    mcnemar_exact_p,
    paired_bootstrap_ci,
    paired_bootstrap_p_value,
)
from lofit.io import atomic_open, atomic_path, read_json, write_json  # noqa: E402
from lofit.tasks import TASKS  # noqa: E402

METHODS = ("base", "lofit")


def run_rows(params: dict) -> list[dict]:
    """One row per (run, method) with the task metrics, the trainable parameter count and the heads
    the adapter edits (read from the adapter, so a fractional `top_k` shows as the count it became)."""
    rows = []
    for name, run in params["runs"].items():
        tune_metrics = read_json(RUNS_DIR / name / "tune" / "metrics.json")
        heads, _ = adapter_heads(RUNS_DIR / name / "tune")
        for method in METHODS:
            summary = read_json(RUNS_DIR / name / "eval" / method / "summary.json")
            rows.append(
                {
                    "run": name,
                    "task": run["task"],
                    "method": method,
                    "trainable_parameters": tune_metrics["trainable_parameters"] if method == "lofit" else 0,
                    "heads": heads if method == "lofit" else 0,
                    "num_examples": summary.get("num_examples"),
                    **{m: summary[m] for m in metric_names(run["task"])},
                }
            )
    return rows


def task_means(rows: list[dict]) -> list[dict]:
    """Per task and method, metrics averaged over its runs weighted by examples (TruthfulQA folds)."""
    merged: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        merged.setdefault((row["task"], row["method"]), []).append(row)
    result = []
    for (task, method), group in merged.items():
        total = sum(r["num_examples"] for r in group)
        entry = {"task": task, "method": method, "runs": len(group), "num_examples": total,
                 "trainable_parameters": group[0]["trainable_parameters"], "heads": group[0]["heads"]}
        for metric in metric_names(task):
            entry[metric] = sum(r[metric] * r["num_examples"] for r in group) / total
        result.append(entry)
    return result


def _scored(value: float, interval: tuple[float, float]) -> str:
    return f"{100 * value:.1f} [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"


def markdown(means: list[dict], pairs: list[dict], params: dict) -> str:
    lines = [
        "# LoFiT results",
        "",
        f"Backbone: `{params['model']['source']}` ({params['model']['dtype']}, quantization "
        f"{params['model']['quantization']}); profile `{params['profile']}`; seed {params['seed']}.",
        "Test splits; TruthfulQA is the example-weighted mean of its two folds.",
        "",
        "| task | method | heads | trainable params | metric | value | examples |",
        "|---|---|---:|---:|---|---:|---:|",
    ]
    for entry in sorted(means, key=lambda e: (e["task"], e["method"])):
        for metric in metric_names(entry["task"]):
            lines.append(
                f"| {entry['task']} | {entry['method']} | {entry['heads']} | {entry['trainable_parameters']} | "
                f"{metric} | {100 * entry[metric]:.1f} | {entry['num_examples']} |"
            )
    lines += [
        "", "## Per run", "",
        "Each score with its 95 % bootstrap interval over the test examples; Δ = LoFiT − base on the same "
        f"examples with a 95 % paired bootstrap interval ({RESAMPLES} resamples, seed {SEED}) and the paired "
        "test's p (McNemar's exact test for right/wrong outcomes, the paired bootstrap for MC2). One "
        "training seed per run.", "",
        "| run | metric | base | LoFiT | Δ (points) | 95 % interval | test | p | examples |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for p in pairs:
        if p["difference"] is None:
            lines.append(f"| {p['run']} | {p['metric']} | {100 * p['base']:.1f} | {100 * p['lofit']:.1f} | "
                         f"{100 * (p['lofit'] - p['base']):+.1f} | — | no per-example outcomes | — | {p['num_examples']} |")
            continue
        lines.append(
            f"| {p['run']} | {p['metric']} | {_scored(p['base'], p['base_ci'])} | {_scored(p['lofit'], p['lofit_ci'])} | "
            f"{100 * p['difference']:+.1f} | [{100 * p['ci_low']:+.1f}, {100 * p['ci_high']:+.1f}] | {p['test']} | "
            f"{p['p']:.3g} | {p['num_examples']} |"
        )
    lines += ["", "Training curves: `reports/curves/`; head heat-maps: `runs/*/select/heads.png`.",
              "Baselines (ITI, RepE, LoRA, RED) and ablations (head sources, head swap, K, data size): "
              "`reports/comparison.md`, from the opt-in `dvc repro compare/dvc.yaml`.", ""]
    return "\n".join(lines)


def read_predictions(path: Path) -> list[dict]:
    if not path.is_file():
        raise SystemExit(f"{path}: missing (run its stage)")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def paired_scores(base: Path, lofit: Path, metric: str) -> dict:
    """Base vs LoFiT on one metric from their predictions folders: both means with bootstrap
    intervals, the paired difference (LoFiT − base) with its interval, and the paired test's p
    (McNemar's exact test when every outcome is right/wrong, else the paired bootstrap). Refused
    unless both folders scored the same questions in the same order and their summaries agree."""
    folders = {"base": base, "lofit": lofit}
    rows = {method: read_predictions(folder / "predictions.jsonl") for method, folder in folders.items()}
    try:
        check_paired(rows["base"], rows["lofit"])
    except ValueError as err:
        raise SystemExit(f"{base} vs {lofit}: {err}") from None
    if not all(metric in row or "correct" in row for method_rows in rows.values() for row in method_rows):
        # no per-example outcome (a `files` run scored by loss): the summaries' values, no interval
        return {"metric": metric, "num_examples": len(rows["base"]), "difference": None,
                **{method: read_json(folder / "summary.json")[metric] for method, folder in folders.items()}}
    values = {method: per_example(method_rows, metric) for method, method_rows in rows.items()}
    result = {"metric": metric, "num_examples": len(values["base"])}
    for method, folder in folders.items():
        mean = sum(values[method]) / len(values[method])
        summary = read_json(folder / "summary.json")
        if not math.isclose(summary[metric], mean, abs_tol=1e-9):
            raise SystemExit(f"{folder}: summary {metric} {summary[metric]} != its predictions' {mean}")
        result[method], result[f"{method}_ci"] = mean, bootstrap_mean_ci(values[method])
    binary = all(v in (0.0, 1.0) for v in values["base"] + values["lofit"])
    if binary:
        p, test = mcnemar_exact_p([v == 1.0 for v in values["base"]], [v == 1.0 for v in values["lofit"]]), "McNemar"
    else:
        p, test = paired_bootstrap_p_value(values["base"], values["lofit"]), "paired bootstrap"
    result["difference"] = result["lofit"] - result["base"]
    result["ci_low"], result["ci_high"] = paired_bootstrap_ci(values["base"], values["lofit"])
    return {**result, "p": p, "test": test}


def run_pairs(params: dict) -> list[dict]:
    """`paired_scores` of every run and metric on its test split."""
    return [
        {"run": name, **paired_scores(RUNS_DIR / name / "eval" / "base", RUNS_DIR / name / "eval" / "lofit", metric)}
        for name, run in params["runs"].items()
        for metric in metric_names(run["task"])
    ]


def ood_rows() -> list[dict]:
    """Per out-of-domain set: base and TruthfulQA-tuned scores and their paired difference
    (LoFiT − base per question, bootstrap 95 % interval, McNemar's exact p)."""
    rows = []
    for task in OOD_TASKS:
        paired = paired_scores(RUNS_DIR / "ood" / "base" / task, RUNS_DIR / "ood" / "lofit" / task, TASKS[task].primary_metric)
        rows.append({"task": task, **{key: paired[key] for key in ("metric", "num_examples", "base", "lofit", "difference", "ci_low", "ci_high")},
                     "mcnemar_p": paired["p"]})
    return rows


def judge_rows(params: dict) -> list[dict]:
    """Open-ended TruthfulQA verdicts per fold and method (or why nothing was judged)."""
    rows = []
    for name, run in params["runs"].items():
        if run["task"] != "truthfulqa":
            continue
        for method in METHODS:
            summary = read_json(RUNS_DIR / name / "open_ended" / method / "judge" / "judge_summary.json")
            rows.append({"run": name, "method": method, **summary})
    return rows


def ood_markdown(rows: list[dict], params: dict) -> list[str]:
    options = params["ood"]["options"]
    shots = ", ".join(f"{task} {(options.get(task) or {}).get('shots', 0)}-shot" for task in OOD_TASKS)
    lines = [
        "",
        f"## Out of domain (LoFiT = the `{params['ood']['adapter_run']}` TruthfulQA adapter)",
        "",
        f"Prompts: {shots} (TriviaQA/NQ-open: exact match of the first generated line; MMLU: answer-letter "
        "log-likelihood). Δ = LoFiT − base on the same questions, with a 95 % paired bootstrap interval "
        f"({RESAMPLES} resamples of the questions, seed {SEED}) and McNemar's exact p.",
        "",
        "| task | metric | base | LoFiT | Δ (points) | 95 % interval | McNemar p | examples |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['task']} | {r['metric']} | {100 * r['base']:.1f} | {100 * r['lofit']:.1f} | {100 * r['difference']:+.1f} | "
        f"[{100 * r['ci_low']:+.1f}, {100 * r['ci_high']:+.1f}] | {r['mcnemar_p']:.3g} | {r['num_examples']} |"
        for r in rows
    ]
    return lines


def judge_markdown(rows: list[dict]) -> list[str]:
    lines = ["", "## TruthfulQA open-ended (judge)", ""]
    if not any(r.get("judged") for r in rows):
        reasons = sorted({str(r.get("reason", "")) for r in rows})
        return lines + [f"Not judged: {'; '.join(reasons)}. Answers: `runs/*/open_ended/*/answers.jsonl`."]
    lines += ["| run | method | % truthful | % informative | % truthful and informative | unparsable (truth/info) |",
              "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['run']} | {r['method']} | {r.get('pct_truthful')} | {r.get('pct_informative')} | "
            f"{r.get('pct_truthful_and_informative')} | {r.get('n_unparsable_truth')}/{r.get('n_unparsable_info')} |"
        )
    return lines


def read_curve(path: Path) -> dict[str, list[tuple[float, float]]]:
    """Per-step logged series from a Lightning CSV log (empty cells skipped)."""
    series: dict[str, list[tuple[float, float]]] = {}
    if not path.is_file():
        return series
    with path.open(encoding="utf-8") as handle:
        for record in csv.DictReader(handle):
            step = record.get("step")
            for key, value in record.items():
                if key in ("step", "epoch") or not value or not step:
                    continue
                number = float(value)
                if math.isfinite(number):
                    series.setdefault(key, []).append((float(step), number))
    return series


def plot_curves(params: dict) -> None:
    for name in params["runs"]:
        for step in ("select", "tune"):
            series = {k: v for k, v in read_curve(RUNS_DIR / name / step / "logs" / "metrics.csv").items() if "loss" in k}
            if not series:
                continue
            figure, axis = plt.subplots(figsize=(6, 3.5))
            for key, points in sorted(series.items()):
                axis.plot(*zip(*points), marker="." if len(points) < 30 else None, label=key)
            axis.set(title=f"{name} · {step}", xlabel="step", ylabel="loss")
            axis.legend(fontsize=7)
            figure.tight_layout()
            with atomic_path(REPORTS / "curves" / f"{name}-{step}.png") as tmp:
                figure.savefig(tmp, format="png", dpi=100)
            plt.close(figure)


def main() -> None:
    params = load_params()
    means = task_means(run_rows(params))
    pairs, ood, judged = run_pairs(params), ood_rows(), judge_rows(params)
    with atomic_open(REPORTS / "results.md") as handle:
        handle.write("\n".join([markdown(means, pairs, params).rstrip("\n"), *ood_markdown(ood, params), *judge_markdown(judged), ""]))
    metrics = {f"{e['task']}.{e['method']}.{m}": round(e[m], 4) for e in means for m in metric_names(e["task"])}
    for p in pairs:
        if p["difference"] is not None:
            metrics.update({f"{p['run']}.{p['metric']}.{key}": round(p[key], 4) for key in ("difference", "ci_low", "ci_high", "p")})
    for r in ood:
        metrics.update({f"ood.{r['task']}.{method}.{r['metric']}": round(r[method], 4) for method in METHODS})
        metrics.update({f"ood.{r['task']}.{key}": round(r[key], 4) for key in ("difference", "ci_low", "ci_high", "mcnemar_p")})
    write_json(REPORTS / "metrics.json", metrics)
    plot_curves(params)


if __name__ == "__main__":
    main()

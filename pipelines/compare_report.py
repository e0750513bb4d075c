"""DVC stage of compare/dvc.yaml: the paper's baselines and ablations next to LoFiT.

Reads the compare pipeline's evaluations (compare/runs/...) and the main study's runs; writes
reports/comparison.md, reports/comparison.json (a DVC metric) and reports/comparison/*.png.
Rows of one table score the same test examples: the compare evaluations scored the first
`compare.eval_limit` examples, so the main base and LoFiT rows are rescored on that prefix.
"""

from __future__ import annotations

import json
import math
import statistics
import struct
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from compare_common import COMPARE_RUNS as COMPARE  # noqa: E402
from compare_common import eval_limit  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from report import OOD_TASKS, REPORTS, metric_names  # noqa: E402
from stage_params import MODEL_DIR, RUNS_DIR, RunParams, load_params  # noqa: E402

from lofit.io import atomic_open, atomic_path, read_json, write_json  # noqa: E402
from lofit.tasks import TASKS  # noqa: E402
from lofit.training.heads import HeadRanking, resolve_top_k  # noqa: E402

PLOTS = REPORTS / "comparison"
LABELS = {"base": "base", "lofit": "LoFiT", "iti": "ITI", "repe": "RepE", "lora": "LoRA", "red": "RED"}
METRICS = {"mc1": "MC1", "mc2": "MC2", "exact_match": "EM", "accuracy": "acc"}
CHOICE = {"top_k": "K", "alpha": "α"}
PEFT_METHODS = ("lora", "red")
Result = dict[int, dict[str, Any]]  # seed -> summary of one evaluation
Stat = dict[str, float]  # mean, n, and sd when there are two or more seeds
Section = tuple[list[str], dict]  # markdown lines, comparison.json entry


def prefix_metrics(predictions_path: Path, task: str, limit: int | None) -> dict[str, float]:
    """The task's metrics over the first `limit` rows of a predictions.jsonl (None = all rows)."""
    rows = []
    with Path(predictions_path).open(encoding="utf-8") as handle:
        for line in handle:
            if limit is not None and len(rows) >= limit:
                break
            if line.strip():
                rows.append(json.loads(line))
    if not rows:
        raise SystemExit(f"{predictions_path}: no predictions")
    if task == "truthfulqa":
        metrics = {m: sum(row[m] for row in rows) / len(rows) for m in ("mc1", "mc2", "mc3")}
    else:
        metrics = {TASKS[task].primary_metric: sum(bool(row["correct"]) for row in rows) / len(rows)}
    return {**metrics, "num_examples": len(rows)}


def need(path: Path, stage: str) -> Path:
    """`path`, or a one-line error naming it and the stage that writes it."""
    if not path.is_file():
        raise SystemExit(f"{path}: missing; it is written by {stage}")
    return path


def compare_stage(stage: str) -> str:
    return f"stage {stage} of compare/dvc.yaml"


def stat(result: Result | None, metric: str) -> Stat | None:
    """Mean, sample sd (two or more seeds) and seed count of one metric."""
    if not result:
        return None
    values = [summary[metric] for summary in result.values()]
    out: Stat = {"mean": statistics.fmean(values), "n": len(values)}
    if len(values) > 1:
        out["sd"] = statistics.stdev(values)
    return out


def pooled(results: list[Result], metrics: list[str]) -> Result:
    """Example-weighted mean over runs, per seed that every run has (the TruthfulQA folds)."""
    out: Result = {}
    for seed in sorted(set.intersection(*(set(result) for result in results))):
        rows = [result[seed] for result in results]
        total = sum(row["num_examples"] for row in rows)
        out[seed] = {m: sum(row[m] * row["num_examples"] for row in rows) / total for m in metrics}
        out[seed]["num_examples"] = total
    return out


def percent(s: Stat) -> float:
    """The mean as printed (%, one decimal): comparisons use it, so float noise is never a win."""
    return round(100 * s["mean"], 1)


def fmt(s: Stat, bold: bool) -> str:
    sd = f"{100 * s['sd']:.1f}" if "sd" in s else "—"
    text = f"{100 * s['mean']:.1f} ± {sd} (n={s['n']})"
    return f"**{text}**" if bold else text


def rounded(s: Stat) -> dict[str, float]:
    return {k: v if k == "n" else round(v, 4) for k, v in s.items()}


def table(header: list[str], rows: list[list[Any]], by_row: bool = False) -> list[str]:
    """Markdown table; Stat cells print as mean ± sd (n), the best mean per column (or per row) bold."""
    columns = list(zip(*rows))

    def best(cells: tuple | list) -> float | None:
        means = [percent(c) for c in cells if isinstance(c, dict)]
        return max(means) if len(means) > 1 else None

    def cell(c: Any, line: list, j: int) -> str:
        if isinstance(c, dict):
            return fmt(c, percent(c) == best(line if by_row else columns[j]))
        return "—" if c is None else str(c)

    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    return lines + ["| " + " | ".join(cell(c, row, j) for j, c in enumerate(row)) + " |" for row in rows]


def beats(reference: str, ref: Stat | None, others: dict[str, Stat | None], where: str) -> list[str]:
    """One explicit line per method whose mean beats the reference (LoFiT) on `where`, as printed
    (to 0.1 point: float noise between equal scores is not a win)."""
    if ref is None:
        return []
    return [f"{name} beats {reference} on {where}: {percent(s):.1f} vs {percent(ref):.1f}"
            for name, s in others.items() if s is not None and percent(s) > percent(ref)]


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
        return read_json(need(COMPARE / run / name / "info.json", compare_stage(stage)))

    def seeded(self, run: str, name: str, stage: str, seeds: list[int] | None = None) -> Result:
        """One compare experiment of `run` per seed; `name` is its folder with a `{seed}` field."""
        return {seed: self.summary(COMPARE / run / name.format(seed=seed), stage, self.examples(run))
                for seed in (self.seeds if seeds is None else seeds)}

    def single(self, run: str, name: str, stage: str) -> tuple[Result, dict]:
        """A compare experiment fitted once (ITI, RepE: no seed in info.json), keyed by the main seed."""
        info = self.info(run, name, stage)
        seed = self.params["seed"] if info.get("seed") is None else info["seed"]
        return {seed: self.summary(COMPARE / run / name, stage, self.examples(run))}, info

    def tune_metrics(self, run: str) -> dict:
        return read_json(need(RUNS_DIR / run / "tune" / "metrics.json", f"stage tune_biases@{run} of dvc.yaml"))

    def ranking(self, run: str) -> HeadRanking:
        path = need(RUNS_DIR / run / "select" / "heads.json", f"stage select_heads@{run} of dvc.yaml")
        return HeadRanking.from_json(read_json(path), source=str(path))

    def top_k(self, run: str) -> tuple[int, int]:
        """The main run's step-2 head count K and the model's number of heads."""
        total = self.ranking(run).geometry.num_total_heads
        return resolve_top_k(self.params["runs"][run]["tune"]["top_k"], total), total

    def heads(self, run: str) -> str:
        k, total = self.top_k(run)
        return f"K={k}, {100 * k / total:.0f} % of heads"

    def scope(self, runs: list[str]) -> str:
        first = f"the first {self.limit}" if self.limit is not None else "all"
        return f"{first} test examples ({'/'.join(str(self.examples(r)) for r in runs)} for {', '.join(runs)})"


def method_table(rows: dict[str, dict[str, Result]], metrics: dict[str, list[str]], reference: str,
                 extra: dict[str, list[str]] | None = None, extra_header: tuple[str, ...] = ()) -> Section:
    """Methods × (column, metric) table and its 'beats' lines; json {column: {method: {metric: stat}}}."""
    stats = {m: {c: {k: stat(res.get(c), k) for k in ks} for c, ks in metrics.items()} for m, res in rows.items()}
    header = ["method", *extra_header, *(f"{c} {METRICS[k]}" for c, ks in metrics.items() for k in ks)]
    body = [[m, *(extra or {}).get(m, []), *(stats[m][c][k] for c, ks in metrics.items() for k in ks)] for m in rows]
    notes = [line for c, ks in metrics.items() for k in ks for line in beats(
        reference, stats[reference][c][k], {m: stats[m][c][k] for m in rows if m != reference}, f"{c} {METRICS[k]}")]
    data = {c: {m.lower().replace(" ", "_"): {k: rounded(s) for k, s in stats[m][c].items() if s}
                for m in rows if c in rows[m]} for c in metrics}
    return table(header, body) + ([""] + notes if notes else []), data


def joined(values: Any) -> str:
    return " / ".join(dict.fromkeys(str(v) for v in values))


def not_configured(title: str, keys: str) -> Section:
    return [title, "", f"Not configured ({keys} empty)."], {}


def truthfulqa_section(study: Study) -> Section:
    title = "## TruthfulQA: ITI and RepE vs LoFiT (Table 1)"
    runs = list(dict.fromkeys(study.configured("iti") + study.configured("repe")))
    if not runs:
        return not_configured(title, "compare.iti.runs and compare.repe.runs are")
    rows: dict[str, dict[str, Result]] = {"base": {}, "ITI": {}, "RepE": {}, "LoFiT": {}}
    notes: dict[str, list[str]] = {m: [] for m in rows}
    params: dict[str, list[int]] = {m: [] for m in rows}
    grids: list[str] = []
    for run in runs:
        if study.task(run) != "truthfulqa":
            raise SystemExit(f"params.yaml: compare.iti/repe run '{run}' is not a TruthfulQA run")
        rows["base"][run], rows["LoFiT"][run] = study.main(run)
        notes["LoFiT"].append(f"{run}: {study.heads(run)}")
        params["base"].append(0)
        params["LoFiT"].append(study.tune_metrics(run)["trainable_parameters"])
        for method in ("iti", "repe"):
            if run not in study.configured(method):
                continue
            label = LABELS[method]
            rows[label][run], info = study.single(run, method, method)
            shown = {key: value for key, value in (info.get("choice") or {}).items() if not key.startswith("grid_")}
            notes[label].append(f"{run}: " + ", ".join(f"{CHOICE.get(key, key)}={value}" for key, value in shown.items()))
            params[label].append(info["edited_parameters"])
            search = read_json(need(COMPARE / run / method / "search.json", compare_stage(method)))
            keys = list(search["grid"][0]) if search["grid"] else []
            grids += ["", f"Validation grid of {label} on {run} (✓ = chosen; MC in %):", ""]
            grids += table(["", *keys], [["✓" if all(row[c] == v for c, v in search["chosen"].items()) else "",
                                          *(f"{100 * row[c]:.1f}" if c in METRICS else row[c] for c in keys)]
                                         for row in search["grid"]])
    metrics = {run: ["mc1", "mc2"] for run in runs}
    if len(runs) > 1:
        for results in rows.values():
            if all(run in results for run in runs):
                results["mean"] = pooled([results[run] for run in runs], ["mc1", "mc2"])
        metrics["mean"] = ["mc1", "mc2"]
    rows = {m: results for m, results in rows.items() if results}
    extra = {m: ["; ".join(notes[m]) or "—", joined(params[m])] for m in rows}
    body, data = method_table(rows, metrics, "LoFiT", extra, ("choice", "edited params"))
    caption = (f"Test MC1/MC2 (%) on {study.scope(runs)}; ITI/RepE fitted once, base and LoFiT rescored on the same "
               "prefix; mean = example-weighted over folds.")
    return [title, "", caption, "", *body, *grids], data


def peft_section(study: Study, total: int | None) -> Section:
    title = "## PEFT baselines (Table 3)"
    runs = study.configured("peft")
    if not runs:
        return not_configured(title, "compare.peft.runs is")
    methods = study.compare["peft"].get("methods") or [m for m in PEFT_METHODS if m in study.compare["peft"]]
    rows: dict[str, dict[str, Result]] = {"base": {}, "LoFiT": {}, **{LABELS[m]: {} for m in methods}}
    params: dict[str, list[int]] = {m: [] for m in rows}
    for run in runs:
        rows["base"][run], rows["LoFiT"][run] = study.main(run)
        params["base"].append(0)
        params["LoFiT"].append(study.tune_metrics(run)["trainable_parameters"])
        for m in methods:
            rows[LABELS[m]][run] = study.seeded(run, f"{m}-s{{seed}}", "peft")
            params[LABELS[m]].append(study.info(run, f"{m}-s{study.seeds[0]}", "peft")["edited_parameters"])
    share = {m: [joined(p), joined(f"{100 * x / total:.3g} %" for x in p) if total else "—"] for m, p in params.items()}
    body, data = method_table(rows, {run: [TASKS[study.task(run)].primary_metric] for run in runs}, "LoFiT", share,
                              ("trainable params", "% of model"))
    for i, run in enumerate(runs):
        for m, p in params.items():
            data[run][m.lower()]["trainable_parameters"] = p[i]
    caption = (f"Exact match (%) on {study.scope(runs)}; LoFiT = the main run ({'; '.join(map(study.heads, runs))}); "
               f"LoRA/RED trained once per seed {study.seeds}; % of the model's {total or '?'} parameters.")
    return [title, "", caption, "", *body], data


def ood_section(study: Study) -> Section:
    title = "## Out of domain (Table 5)"
    methods = list((study.compare.get("ood") or {}).get("methods") or [])
    if not methods:
        return not_configured(title, "compare.ood.methods is")
    rows: dict[str, dict[str, Result]] = {"base": {}, "LoFiT": {}, **{LABELS[m]: {} for m in methods}}
    seed, counts = study.params["seed"], []
    for task in OOD_TASKS:
        for m in ("base", "lofit"):
            summary = read_json(need(RUNS_DIR / "ood" / m / task / "summary.json", f"stage ood_{m}@{task} of dvc.yaml"))
            rows[LABELS[m]][task] = {seed: summary}
        counts.append(summary["num_examples"])
        for m in methods:
            rows[LABELS[m]][task] = {seed: study.summary(COMPARE / "ood" / m / task, "ood", counts[-1])}
    body, data = method_table(rows, {t: [TASKS[t].primary_metric] for t in OOD_TASKS}, "LoFiT")
    caption = (f"TriviaQA/NQ-open EM and MMLU accuracy (%) on {'/'.join(map(str, counts))} examples (the main OOD sample); "
               f"LoFiT, {', '.join(LABELS[m] for m in methods)}: the edits of `{study.params['ood']['adapter_run']}`.")
    return [title, "", caption, "", *body], data


def head_source_section(study: Study) -> Section:
    title = "## Step 2 on other heads"
    runs = list(dict.fromkeys(study.configured("random_heads") + study.configured("iti_heads")))
    if not runs:
        return not_configured(title, "compare.random_heads.runs and compare.iti_heads.runs are")
    rows: dict[str, dict[str, Result]] = {"LoFiT heads": {}, "random heads": {}, "ITI heads": {}}
    for run in runs:
        rows["LoFiT heads"][run] = study.main(run)[1]
        for section, label, name in (("random_heads", "random heads", "random"), ("iti_heads", "ITI heads", "iti")):
            if run in study.configured(section):
                rows[label][run] = study.seeded(run, f"heads-{name}-s{{seed}}", section)
    body, data = method_table(rows, {run: metric_names(study.task(run)) for run in runs}, "LoFiT heads")
    caption = f"LoFiT step 2 on K heads from step 1 (the main run), at random, or ranked by ITI probes; {study.scope(runs)}."
    return [title, "", caption, "", *body], data


def head_swap_section(study: Study) -> Section:
    title = "## Head swap: step 2 on heads selected for another task"
    runs = study.configured("head_swap")
    if not runs:
        return not_configured(title, "compare.head_swap.runs is")
    data: dict[str, dict] = {}
    body, notes, matrix = [], [], []
    for run in runs:
        metric = TASKS[study.task(run)].primary_metric
        stats = {src: stat(study.seeded(run, f"heads-from-{src}-s{{seed}}", "head_swap"), metric) for src in runs}
        body.append([f"{run} ({METRICS[metric]})", *stats.values()])
        others = {f"heads from {src}": s for src, s in stats.items()}
        notes += beats(f"{run}'s own heads", stats[run], others, f"{run} {METRICS[metric]}")
        data[run] = {src: {metric: rounded(s)} for src, s in stats.items()}
        matrix.append([100 * s["mean"] for s in stats.values()])
    figure, axis = plt.subplots(figsize=(1.6 * len(runs) + 2.5, 1.2 * len(runs) + 1.5))
    image = axis.imshow(matrix, cmap="viridis")
    middle = (min(map(min, matrix)) + max(map(max, matrix))) / 2
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            axis.text(j, i, f"{value:.1f}", ha="center", va="center", color="w" if value < middle else "k")
    axis.set(xticks=range(len(runs)), xticklabels=runs, yticks=range(len(runs)), yticklabels=runs,
             xlabel="heads selected on", ylabel="trained and evaluated on", title="head swap (% primary metric)")
    figure.colorbar(image, ax=axis)
    save(figure, "head_swap.png")
    caption = (f"Primary metric (%) of step 2 on each row's task with the top-K heads of each column's task; "
               f"{study.scope(runs)}; best per row in bold.")
    return [title, "", caption, "", *table(["trained & evaluated on \\ heads from", *runs], body, by_row=True),
            *([""] + notes if notes else [])], data


def plot_points(axis: plt.Axes, points: dict[float, Stat], **style: Any) -> None:
    xs = sorted(points)
    axis.errorbar(xs, [100 * points[x]["mean"] for x in xs], yerr=[100 * points[x].get("sd", 0) for x in xs],
                  marker="o", capsize=3, **style)


def run_panels(runs: list[str]) -> tuple[plt.Figure, list[plt.Axes]]:
    """One plot panel per run, side by side."""
    figure, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.5), squeeze=False)
    return figure, list(axes[0])


def k_sweep_section(study: Study) -> Section:
    title = "## Number of heads K"
    runs = study.configured("k_sweep")
    if not runs:
        return not_configured(title, "compare.k_sweep.runs is")
    lines, data = [title], {}
    figure, axes = run_panels(runs)
    for run, axis in zip(runs, axes):
        metric = TASKS[study.task(run)].primary_metric
        base, lofit = study.main(run)
        k_main = study.top_k(run)[0]
        points = {"base": (0, stat(base, metric)), "main": (k_main, stat(lofit, metric))}
        for k in study.compare["k_sweep"]["top_k"]:
            heads = study.info(run, f"k{k}-s{study.seeds[0]}", "k_sweep")["top_k"]
            points[f"k{k}"] = (heads, stat(study.seeded(run, f"k{k}-s{{seed}}", "k_sweep"), metric))
        ordered = sorted(points.items(), key=lambda item: (item[1][0], item[0]))
        data[run] = {name: {"heads": heads, metric: rounded(s)} for name, (heads, s) in ordered}
        names = {"base": "base", "main": f"main run (top_k={k_main})"}
        lines += ["", f"{run}: {METRICS[metric]} (%) by K on {study.scope([run])}; sweep trained per seed {study.seeds}.", ""]
        lines += table(["setting", "heads", METRICS[metric]], [[names.get(n, f"top_k={n[1:]}"), h, s] for n, (h, s) in ordered])
        notes = beats("LoFiT", points["main"][1], {"base": points["base"][1]}, f"{run} {METRICS[metric]}")
        lines += [""] + notes if notes else []
        plot_points(axis, {h: s for name, (h, s) in ordered if name != "base"}, label="LoFiT")
        axis.errorbar(k_main, 100 * points["main"][1]["mean"], yerr=100 * points["main"][1].get("sd", 0),
                      fmt="r*", markersize=12, capsize=3, label="main run")
        axis.axhline(100 * points["base"][1]["mean"], color="gray", linestyle="--", label="base")
        axis.set(title=run, xlabel="heads (K)", ylabel=f"{METRICS[metric]} (%)")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.legend(fontsize=7)
    save(figure, "k_sweep.png")
    return lines, data


def data_efficiency_section(study: Study) -> Section:
    title = "## Data efficiency"
    runs, config = study.configured("data_efficiency"), study.compare.get("data_efficiency") or {}
    if not runs:
        return not_configured(title, "compare.data_efficiency.runs is")
    lines, data = [title], {}
    figure, axes = run_panels(runs)
    for run, axis in zip(runs, axes):
        metric = TASKS[study.task(run)].primary_metric
        full = study.train_examples(run)
        curves: dict[str, dict[int, Stat]] = {}
        for m in config["methods"]:
            curve = curves[LABELS[m]] = {
                n: stat(study.seeded(run, f"n{n}-{m}-s{{seed}}", "data_efficiency"), metric) for n in config["train_size"]}
            if m == "lofit":
                curve[full] = stat(study.main(run)[1], metric)
            elif m in PEFT_METHODS and run in study.configured("peft"):
                curve[full] = stat(study.seeded(run, f"{m}-s{{seed}}", "peft"), metric)
        sizes = sorted({n for curve in curves.values() for n in curve})
        source = "full = the main LoFiT run and the Table 3 runs"
        lines += ["", f"{run}: {METRICS[metric]} (%) by number of training examples on {study.scope([run])}; {source}.", ""]
        lines += table(["method", *(f"n={n}" + (" (full)" if n == full else "") for n in sizes)],
                       [[m, *(curve.get(n) for n in sizes)] for m, curve in curves.items()])
        notes = [line for n in sizes for line in beats("LoFiT", curves.get("LoFiT", {}).get(n), {
            m: curve.get(n) for m, curve in curves.items() if m != "LoFiT"}, f"{run} {METRICS[metric]} with {n} examples")]
        lines += [""] + notes if notes else []
        data[run] = {m.lower(): {f"n{n}": {metric: rounded(s)} for n, s in curve.items()} for m, curve in curves.items()}
        for m, curve in curves.items():
            plot_points(axis, curve, label=m)
        axis.set(title=run, xlabel="training examples", ylabel=f"{METRICS[metric]} (%)", xscale="log")
        axis.set_xticks(sizes, [str(n) for n in sizes])
        axis.minorticks_off()
        axis.legend(fontsize=7)
    save(figure, "data_efficiency.png")
    return lines, data


def head_layers_section(study: Study) -> Section:
    runs = list(study.params["runs"])
    rankings = {run: study.ranking(run) for run in runs}
    layers = max(r.geometry.num_layers for r in rankings.values())
    width = math.ceil(layers / 8)
    buckets = [f"{lo}-{min(lo + width, layers) - 1}" if width > 1 else str(lo) for lo in range(0, layers, width)]
    data, body = {}, []
    figure, axes = plt.subplots(len(runs), 1, figsize=(7, 1.2 * len(runs) + 1), sharex=True, squeeze=False)
    for run, axis in zip(runs, axes[:, 0]):
        k = study.top_k(run)[0]
        counts = [0] * layers
        for (layer, _head), _score in rankings[run].top(k):
            counts[layer] += 1
        per_bucket = [sum(counts[lo:lo + width]) for lo in range(0, layers, width)]
        body.append([run, k, *per_bucket])
        data[run] = dict(zip(buckets, per_bucket))
        axis.bar(range(layers), counts)
        axis.set_ylabel(run, rotation=0, ha="right", fontsize=8)
        axis.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1, 0].set_xlabel("layer")
    axes[-1, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.suptitle("layers of the top-K step-1 heads")
    save(figure, "head_layers.png")
    caption = "Number of each main run's top-K step-1 heads (K = runs.<run>.tune.top_k) per block of layers."
    return ["## Layers of the selected heads", "", caption, "", *table(["run", "K", *buckets], body)], data


def save(figure: plt.Figure, name: str) -> None:
    figure.tight_layout()
    with atomic_path(PLOTS / name) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)


def main() -> None:
    params = load_params()
    study = Study(params)
    for name in ("head_swap.png", "k_sweep.png", "data_efficiency.png"):
        (PLOTS / name).unlink(missing_ok=True)  # a section no longer configured leaves no stale plot
    sections = {
        "truthfulqa": truthfulqa_section(study),
        "peft": peft_section(study, model_parameters()),
        "ood": ood_section(study),
        "head_source": head_source_section(study),
        "head_swap": head_swap_section(study),
        "k_sweep": k_sweep_section(study),
        "data_efficiency": data_efficiency_section(study),
        "head_layers": head_layers_section(study),
    }
    first = f"the first {study.limit}" if study.limit is not None else "all"
    lines = [
        "# LoFiT vs baselines and ablations",
        "",
        f"Backbone: `{params['model']['source']}`; main seed {params['seed']}, compare seeds {study.seeds}. Compare "
        f"evaluations score {first} test examples; the main base/LoFiT rows are rescored on the same prefix.",
        "Values in %: mean ± sample sd over seeds (— with one seed), n = seeds; best per column in bold.",
    ]
    for section_lines, _ in sections.values():
        lines += ["", *section_lines]
    with atomic_open(REPORTS / "comparison.md") as handle:
        handle.write("\n".join(lines) + "\n")
    write_json(REPORTS / "comparison.json", {key: data for key, (_, data) in sections.items() if data})


if __name__ == "__main__":
    main()

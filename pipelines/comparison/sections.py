"""The comparison report's sections: one function per table of reports/comparison.md.

Each returns its markdown lines and its comparison.json entry, and draws its figure (`plots`).
"""

from __future__ import annotations

import math

from common import COMPARE_RUNS, OOD_TASKS, RUNS_DIR, metric_names
from comparison import plots
from comparison.load import Study, compare_stage, need
from comparison.tables import (
    METRICS,
    Result,
    Section,
    Stat,
    beats,
    joined,
    method_table,
    not_configured,
    pooled,
    rounded,
    stat,
    table,
)

from lofit.io import read_json
from lofit.tasks import TASKS

LABELS = {"base": "base", "lofit": "LoFiT", "iti": "ITI", "repe": "RepE", "lora": "LoRA", "red": "RED", "reft": "ReFT"}
CHOICE = {"top_k": "K", "alpha": "α"}
PEFT_METHODS = ("lora", "red", "reft")


def grid_lines(study: Study, run: str, method: str) -> list[str]:
    """The method's lr grid on `run`: val scores per lr, ✓ = chosen (the protocol's choice, on val only)."""
    chosen, rows = study.grid(run, method)
    metrics = [k for k in rows[0] if k != "value"]
    return ["", f"Validation lr grid of {LABELS[method]} on {run} (✓ = chosen; val in %):", "",
            *table(["", "lr", *(f"val {METRICS[m]}" for m in metrics)],
                   [["✓" if row["value"] == chosen else "", row["value"], *(f"{100 * row[m]:.1f}" for m in metrics)]
                    for row in rows])]


def truthfulqa_section(study: Study) -> Section:
    title = "## TruthfulQA: ITI and RepE vs LoFiT (Table 1)"
    runs = list(dict.fromkeys(study.configured("iti") + study.configured("repe")))
    if not runs:
        return not_configured(title, "compare.plan.iti.runs and compare.plan.repe.runs are", study.left_out("iti", "ITI"))
    rows: dict[str, dict[str, Result]] = {"base": {}, "ITI": {}, "RepE": {}, "LoFiT": {}}
    notes: dict[str, list[str]] = {m: [] for m in rows}
    params: dict[str, list[int]] = {m: [] for m in rows}
    grids: list[str] = []
    for run in runs:
        if study.task(run) != "truthfulqa":
            raise SystemExit(f"params.yaml: compare.iti/repe run '{run}' is not a TruthfulQA run")
        rows["base"][run], rows["LoFiT"][run] = study.main(run, full=True)
        notes["LoFiT"].append(f"{run}: {study.heads(run)}, lr={study.grid(run, 'lofit')[0]}")
        params["base"].append(0)
        params["LoFiT"].append(study.tune_metrics(run)["trainable_parameters"])
        grids += grid_lines(study, run, "lofit")
        for method in ("iti", "repe"):
            if run not in study.configured(method):
                continue
            label = LABELS[method]
            rows[label][run], info = study.single(run, method, method)
            shown = {key: value for key, value in (info.get("choice") or {}).items() if not key.startswith("grid_")}
            notes[label].append(f"{run}: " + ", ".join(f"{CHOICE.get(key, key)}={value}" for key, value in shown.items()))
            params[label].append(info["edited_parameters"])
            search = read_json(need(COMPARE_RUNS / run / method / "search.json", compare_stage(method)))
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
    caption = (f"Test MC1/MC2 (%) on {study.scope(runs, full=True)}: mean ± sd over seeds (n) [95 % bootstrap CI over "
               f"test examples]; LoFiT = step 2 on the main run's step-1 heads at the lr chosen on val, seeds {study.seeds}; "
               "ITI/RepE fitted once with (K, α) / (layers, α) chosen on val; mean = example-weighted over folds; "
               "'beats' only at paired p < 0.05 (McNemar for MC1 with one seed, else paired bootstrap)."
               + study.left_out("iti", "ITI") + study.left_out("repe", "RepE"))
    return [title, "", caption, "", *body, *grids], data


def peft_section(study: Study, total: int | None) -> Section:
    title = "## PEFT baselines (Table 3)"
    runs = study.configured("peft")
    if not runs:
        return not_configured(title, "compare.plan.peft.runs is", study.left_out("peft", "Table 3"))
    methods = study.compare["peft"].get("methods") or [m for m in PEFT_METHODS if m in study.compare["peft"]]
    rows: dict[str, dict[str, Result]] = {"base": {}, "LoFiT": {}, **{LABELS[m]: {} for m in methods}}
    params: dict[str, list[int]] = {m: [] for m in rows}
    grids: list[str] = []
    for run in runs:
        rows["base"][run], rows["LoFiT"][run] = study.main(run, full=True)
        params["base"].append(0)
        params["LoFiT"].append(study.tune_metrics(run)["trainable_parameters"])
        grids += grid_lines(study, run, "lofit")
        for m in methods:
            rows[LABELS[m]][run] = study.seeded(run, f"{m}-s{{seed}}", "peft", full=True)
            params[LABELS[m]].append(study.info(run, f"{m}-s{study.seeds[0]}", "peft")["edited_parameters"])
            grids += grid_lines(study, run, m)
    share = {m: [joined(p), joined(f"{100 * x / total:.3g} %" for x in p) if total else "—"] for m, p in params.items()}
    body, data = method_table(rows, {run: [TASKS[study.task(run)].primary_metric] for run in runs}, "LoFiT", share,
                              ("trainable params", "% of model"))
    for i, run in enumerate(runs):
        for m, p in params.items():
            data[run][m.lower()]["trainable_parameters"] = p[i]
    caption = (f"Exact match (%) on {study.scope(runs, full=True)}: mean ± sd over seeds (n) [95 % bootstrap CI]; "
               f"LoFiT = step 2 on the main run's heads ({'; '.join(map(study.heads, runs))}); every method at the main "
               f"run's epochs and batch size, lr chosen on val, seeds {study.seeds}; % of the model's {total or '?'} "
               "parameters; 'beats' only at paired p < 0.05." + study.left_out("peft", "Table 3"))
    return [title, "", caption, "", *body, *grids], data


def ood_section(study: Study) -> Section:
    title = "## Out of domain (Table 5)"
    methods = study.configured("ood", "methods")
    if not methods:
        return not_configured(title, "compare.plan.ood.methods is", study.left_out("ood", "the OOD rows of", "methods")
                              + " Base and LoFiT out of domain: reports/results.md.")
    rows: dict[str, dict[str, Result]] = {"base": {}, "LoFiT": {}, **{LABELS[m]: {} for m in methods}}
    seed, counts = study.params["seed"], []
    for task in OOD_TASKS:
        for m in ("base", "lofit"):
            folder = RUNS_DIR / "ood" / m / task
            summary = read_json(need(folder / "summary.json", f"stage ood_{m}@{task} of dvc.yaml"))
            rows[LABELS[m]][task] = {seed: study.summary(folder, f"ood_{m}@{task} of dvc.yaml", summary["num_examples"], task)}
        counts.append(summary["num_examples"])
        for m in methods:
            rows[LABELS[m]][task] = {seed: study.summary(COMPARE_RUNS / "ood" / m / task, "ood", counts[-1], task)}
    body, data = method_table(rows, {t: [TASKS[t].primary_metric] for t in OOD_TASKS}, "LoFiT")
    caption = (f"TriviaQA/NQ-open EM and MMLU accuracy (%) on {'/'.join(map(str, counts))} examples (the main OOD sample); "
               f"LoFiT, {', '.join(LABELS[m] for m in methods)}: the edits of `{study.params['ood']['adapter_run']}`.")
    return [title, "", caption, "", *body], data


def head_source_section(study: Study) -> Section:
    title = "## Step 2 on other heads"
    runs = list(dict.fromkeys(study.configured("random_heads") + study.configured("iti_heads")))
    if not runs:
        return not_configured(title, "compare.plan.random_heads.runs and compare.plan.iti_heads.runs are",
                              study.left_out("random_heads", "random heads") + study.left_out("iti_heads", "ITI heads"))
    rows: dict[str, dict[str, Result]] = {"LoFiT heads": {}, "random heads": {}, "ITI heads": {}}
    for run in runs:
        rows["LoFiT heads"][run] = study.main(run)[1]  # the Table rows at the val-chosen lr, on the prefix
        for section, label, name in (("random_heads", "random heads", "random"), ("iti_heads", "ITI heads", "iti")):
            if run in study.configured(section):
                rows[label][run] = study.seeded(run, f"heads-{name}-s{{seed}}", section)
    body, data = method_table(rows, {run: metric_names(study.task(run)) for run in runs}, "LoFiT heads")
    caption = (f"LoFiT step 2 on K heads from step 1 (the main run's ranking), at random, or ranked by ITI probes, all at "
               f"LoFiT's lr chosen on val ('LoFiT heads' = its Table rows read on the prefix); {study.scope(runs)}; "
               f"seeds {study.ablation_seeds}." + study.left_out("random_heads", "random heads") + study.left_out("iti_heads", "ITI heads"))
    return [title, "", caption, "", *body], data


def head_swap_section(study: Study) -> Section:
    title = "## Head swap: step 2 on heads selected for another task"
    runs = study.configured("head_swap")
    if not runs:
        return not_configured(title, "compare.plan.head_swap.runs is", study.left_out("head_swap", "the head swap"))
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
    plots.head_swap(runs, matrix)
    caption = (f"Primary metric (%) of step 2 on each row's task with the top-K heads of each column's task, at "
               f"LoFiT's lr chosen on val; {study.scope(runs)}; seeds {study.ablation_seeds}; best per row in bold."
               + study.left_out("head_swap", "the head swap"))
    return [title, "", caption, "", *table(["trained & evaluated on \\ heads from", *runs], body, by_row=True),
            *([""] + notes if notes else [])], data


def k_sweep_section(study: Study) -> Section:
    title = "## Number of heads K"
    runs = study.configured("k_sweep")
    if not runs:
        return not_configured(title, "compare.plan.k_sweep.runs is", study.left_out("k_sweep", "the K sweep"))
    lines, data, panels = [title], {}, []
    for run in runs:
        metric = TASKS[study.task(run)].primary_metric
        base, lofit = study.main(run)
        k_main = study.top_k(run)[0]
        chosen, heads_of, val_rows = study.k_choice(run)
        points = {"base": (0, stat(base, metric)), "main": (k_main, stat(lofit, metric))}
        for k in study.compare["k_sweep"]["top_k"]:
            points[f"k{k}"] = (heads_of[f"k{k}"], stat(study.seeded(run, f"k{k}-s{{seed}}", "k_sweep"), metric))
        ordered = sorted(points.items(), key=lambda item: (item[1][0], item[0]))
        data[run] = {name: {"heads": heads, metric: rounded(s), **({"chosen_on_val": True} if name == chosen else {})}
                     for name, (heads, s) in ordered}
        names = {"base": "base", "main": f"runs.{run}.tune.top_k (K={k_main})"}
        val = {row["value"]: row[metric] for row in val_rows}
        lines += ["", f"{run}: {METRICS[metric]} (%) by K on {study.scope([run])}, LoFiT step 2 at its lr chosen on val "
                      f"({study.grid(run, 'lofit')[0]}), seeds {study.ablation_seeds}; K chosen on val (seed "
                      f"{study.main_seed_of_ablations()}) among these settings, ✓ = chosen."
                      + study.left_out("k_sweep", "top_k", "top_k"), ""]
        lines += table(["", "setting", "heads", f"val {METRICS[metric]}", f"test {METRICS[metric]}"],
                       [["✓" if n == chosen else "", names.get(n, f"top_k={n[1:]}"), h,
                         f"{100 * val[n]:.1f}" if n in val else "—", s] for n, (h, s) in ordered])
        notes = beats("LoFiT", points["main"][1], {"base": points["base"][1]}, f"{run} {METRICS[metric]}")
        lines += [""] + notes if notes else []
        by_k = {h: s for name, (h, s) in ordered if name != "base"}
        panels.append((run, METRICS[metric], by_k, (k_main, points["main"][1]), points["base"][1]))
    plots.k_sweep(panels)
    return lines, data


def data_efficiency_section(study: Study) -> Section:
    title = "## Data efficiency"
    runs, config = study.configured("data_efficiency"), study.compare.get("data_efficiency") or {}
    if not runs:
        return not_configured(title, "compare.plan.data_efficiency.runs is",
                              study.left_out("data_efficiency", "data efficiency"))
    lines, data, panels = [title], {}, []
    for run in runs:
        metric = TASKS[study.task(run)].primary_metric
        full = study.train_examples(run)
        curves: dict[str, dict[int, Stat]] = {}
        for m in config["methods"]:
            curve = curves[LABELS[m]] = {
                n: stat(study.seeded(run, f"n{n}-{m}-s{{seed}}", "data_efficiency"), metric) for n in config["train_size"]}
            if m == "lofit":
                curve[full] = stat(study.main(run)[1], metric)
            elif m in PEFT_METHODS and run in study.configured("peft"):
                curve[full] = stat(study.on_prefix(run, f"{m}-s{{seed}}", "peft"), metric)
        sizes = sorted({n for curve in curves.values() for n in curve})
        source = ("every point on this prefix; full = the Table 1/3 rows (lr chosen on val) read on the same prefix; "
                  "LoFiT below full runs both steps on the first n examples")
        lines += ["", f"{run}: {METRICS[metric]} (%) by number of training examples on {study.scope([run])}; {source}; "
                      f"each method at its lr chosen on val, seeds {study.ablation_seeds}."
                      + study.left_out("data_efficiency", "data efficiency")
                      + study.left_out("data_efficiency", "n =", "train_size"), ""]
        lines += table(["method", *(f"n={n}" + (" (full)" if n == full else "") for n in sizes)],
                       [[m, *(curve.get(n) for n in sizes)] for m, curve in curves.items()])
        notes = [line for n in sizes for line in beats("LoFiT", curves.get("LoFiT", {}).get(n), {
            m: curve.get(n) for m, curve in curves.items() if m != "LoFiT"}, f"{run} {METRICS[metric]} with {n} examples")]
        lines += [""] + notes if notes else []
        data[run] = {m.lower(): {f"n{n}": {metric: rounded(s)} for n, s in curve.items()} for m, curve in curves.items()}
        panels.append((run, METRICS[metric], curves, sizes))
    plots.data_efficiency(panels)
    return lines, data


def head_layers_section(study: Study) -> Section:
    runs = list(study.params["runs"])
    rankings = {run: study.ranking(run) for run in runs}
    layers = max(r.geometry.num_layers for r in rankings.values())
    width = math.ceil(layers / 8)
    buckets = [f"{lo}-{min(lo + width, layers) - 1}" if width > 1 else str(lo) for lo in range(0, layers, width)]
    data, body, layer_counts = {}, [], {}
    for run in runs:
        k = study.top_k(run)[0]
        counts = [0] * layers
        for (layer, _head), _score in rankings[run].top(k):
            counts[layer] += 1
        per_bucket = [sum(counts[lo:lo + width]) for lo in range(0, layers, width)]
        body.append([run, k, *per_bucket])
        data[run] = dict(zip(buckets, per_bucket))
        layer_counts[run] = counts
    plots.head_layers(layer_counts)
    caption = "Number of each main run's top-K step-1 heads (K = runs.<run>.tune.top_k) per block of layers."
    return ["## Layers of the selected heads", "", caption, "", *table(["run", "K", *buckets], body)], data


def frontier_points(study: Study, run: str) -> dict[str, tuple[int, Stat]]:
    """Method label → (trainable or edited parameters, test stat of the primary metric on the
    ablations' prefix) for every method of `run`, every K of its sweep, and LoFiT with K and lr chosen on val."""
    metric = TASKS[study.task(run)].primary_metric
    first = study.ablation_seeds[0]
    points = {"LoFiT": (study.info(run, f"lofit-s{first}", "lofit")["edited_parameters"], stat(study.main(run)[1], metric))}
    if run in study.configured("peft"):
        for m in study.compare["peft"]["methods"]:
            points[LABELS[m]] = (study.info(run, f"{m}-s{first}", "peft")["edited_parameters"],
                                 stat(study.on_prefix(run, f"{m}-s{{seed}}", "peft"), metric))
    for m in ("iti", "repe"):
        if run in study.configured(m):
            points[LABELS[m]] = (study.info(run, m, m)["edited_parameters"], stat(study.single_on_prefix(run, m, m), metric))
    if run in study.configured("k_sweep"):
        chosen, heads, _ = study.k_choice(run)
        for k in study.compare["k_sweep"]["top_k"]:
            points[f"LoFiT K={heads[f'k{k}']}"] = (study.info(run, f"k{k}-s{first}", "k_sweep")["edited_parameters"],
                                                   stat(study.seeded(run, f"k{k}-s{{seed}}", "k_sweep"), metric))
        picked = points["LoFiT"] if chosen == "main" else points[f"LoFiT K={heads[chosen]}"]
        points[f"LoFiT, K and lr chosen on val (K={heads[chosen]})"] = picked
    return points


def frontier_section(study: Study) -> Section:
    title = "## Parameter-efficiency frontier"
    runs = study.configured("lofit")
    if not runs:
        return not_configured(title, "compare.plan.lofit.runs is")
    lines, data = [title, "", (
        f"Per run: test primary metric (%) with its 95 % bootstrap CI against trainable (LoRA, RED, ReFT, LoFiT) or edited "
        f"(ITI, RepE) parameters, log scale, on {study.scope(runs)}; seeds {study.ablation_seeds}; every method at its lr "
        "(ITI/RepE: K/layers and α) chosen on val; the K points are the sweep at LoFiT's chosen lr; 'K and lr chosen on "
        "val' picks K on val after the lr. Base = dashed line. Only the methods this plan runs on a task appear"
        + "." + study.left_out("k_sweep", "the K sweep") + study.left_out("lofit", "LoFiT's Table rows"))], {}
    for run in runs:
        metric = TASKS[study.task(run)].primary_metric
        points = frontier_points(study, run)
        base = stat(study.main(run)[0], metric)
        name = plots.frontier(run, METRICS[metric], points, base)
        lines += ["", f"{run} ({METRICS[metric]}): ![frontier of {run}](comparison/{name})", ""]
        lines += table(["method", "parameters", METRICS[metric]],
                       [[label, params, s] for label, (params, s) in sorted(points.items(), key=lambda kv: (kv[1][0], kv[0]))])
        data[run] = {label: {"parameters": params, metric: rounded(s)} for label, (params, s) in points.items()}
    return lines, data

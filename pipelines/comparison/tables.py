"""Statistics over seeds and the markdown tables of the comparison report.

A `Result` maps a seed to one evaluation's summary with its per-example `outcomes` (metric → one
value per test example); a `Stat` is one metric's mean, sample sd (two or more seeds), seed count
and 95 % bootstrap interval, with the protocol's `Cell` behind it for paired tests. A "beats" line
is written only at paired p < 0.05 (`comparison.protocol.claim`).
"""

from __future__ import annotations

from typing import Any

from comparison.protocol import cell, claim

METRICS = {"mc1": "MC1", "mc2": "MC2", "exact_match": "EM", "accuracy": "acc"}
Result = dict[int, dict[str, Any]]  # seed -> summary of one evaluation
Stat = dict[str, Any]  # mean, n, low, high, cell, and sd when there are two or more seeds
Section = tuple[list[str], dict]  # markdown lines, comparison.json entry


def stat(result: Result | None, metric: str) -> Stat | None:
    """Mean, sample sd (two or more seeds) and seed count of one metric."""
    if not result:
        return None
    computed = cell({seed: summary["outcomes"][metric] for seed, summary in result.items()})
    out: Stat = {"mean": computed.mean, "n": computed.n, "low": computed.low, "high": computed.high, "cell": computed}
    if computed.sd is not None:
        out["sd"] = computed.sd
    return out


def pooled(results: list[Result], metrics: list[str]) -> Result:
    """Example-weighted mean over runs, per seed that every run has (the TruthfulQA folds)."""
    out: Result = {}
    for seed in sorted(set.intersection(*(set(result) for result in results))):
        rows = [result[seed] for result in results]
        total = sum(row["num_examples"] for row in rows)
        out[seed] = {m: sum(row[m] * row["num_examples"] for row in rows) / total for m in metrics}
        out[seed]["num_examples"] = total
        out[seed]["outcomes"] = {m: [x for row in rows for x in row["outcomes"][m]] for m in metrics}
    return out


def percent(s: Stat) -> float:
    """The mean as printed (%, one decimal): comparisons use it, so float noise is never a win."""
    return round(100 * s["mean"], 1)


def fmt(s: Stat, bold: bool) -> str:
    sd = f"{100 * s['sd']:.1f}" if "sd" in s else "—"
    text = f"{100 * s['mean']:.1f} ± {sd} (n={s['n']}) [{100 * s['low']:.1f}, {100 * s['high']:.1f}]"
    return f"**{text}**" if bold else text


def rounded(s: Stat) -> dict[str, Any]:
    """The json form of a Stat: mean, sd, n, ci and the number of test examples."""
    return s["cell"].to_json()


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
    """One line per method against the reference (LoFiT) on `where`: who beats whom where a paired
    test on the same examples gives p < 0.05, else "not significant" (`protocol.claim`)."""
    if ref is None:
        return []
    return [claim(name, s["cell"], reference, ref["cell"], where) for name, s in others.items()
            if s is not None and s["cell"].examples == ref["cell"].examples]


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


def not_configured(title: str, keys: str, note: str = "") -> Section:
    """A section the active plan does not run; `note` says whether the GPU plan does."""
    return [title, "", f"Not configured ({keys} empty).{note}"], {}

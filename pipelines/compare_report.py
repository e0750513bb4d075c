"""DVC stage of compare/dvc.yaml: the paper's baselines and ablations next to LoFiT, under the
protocol of `comparison.protocol` (lr chosen on val, 95 % intervals, claims only at paired p < 0.05).

Reads the compare pipeline's evaluations (compare/runs/...) and the main study's runs; writes
reports/comparison.md, reports/comparison.json (a DVC metric) and reports/comparison/*.png (the
frontier per run among them). Tables 1 and 3 score the full test sets; the ablations and the
frontier the first `compare.eval_limit` test examples, where every row (LoFiT's Table rows at the
lr chosen on val, base, PEFT) is read on that prefix.
The work is in `comparison/`: `load` (files → `Study`), `sections` (tables), `plots` (figures).
"""

from __future__ import annotations

import argparse
import re

from common import REPORTS, load_params
from comparison import plots, sections
from comparison.load import Study, model_parameters, prefix_metrics

from lofit.io import atomic_open, write_json

__all__ = ["Study", "main", "prefix_metrics", "summary"]

# The two sentence forms of `comparison.protocol.claim`.
BEATS = re.compile(r"^(?P<winner>.+?) beats (?P<loser>.+?) on (?P<where>.+?): (?P<first>\d+\.\d) vs (?P<second>\d+\.\d) ")
TIE = re.compile(r"^(?P<other>.+?) vs (?P<reference>.+?) on (?P<where>.+?): not significant, "
                 r"(?P<first>\d+\.\d) vs (?P<second>\d+\.\d) ")


def summary(lines: list[str], reference: str = "LoFiT") -> list[str]:
    """The report's paired-test sentences about `reference` against another method (the base model
    left out), grouped into wins, losses and no significant difference, so a loss is read first."""
    wins, losses, ties = [], [], []
    for line in lines:
        if match := BEATS.match(line):
            winner, loser, where = match["winner"], match["loser"], match["where"]
            if reference not in (winner, loser) or "base" in (winner, loser):
                continue
            other, group = (loser, wins) if winner == reference else (winner, losses)
            group.append(f"{other} on {where} ({match['first']} vs {match['second']})")
        elif (match := TIE.match(line)) and match["reference"] == reference and match["other"] != "base":
            ties.append(f"{match['other']} on {match['where']} ({match['first']} vs {match['second']})")
    if not wins + losses + ties:
        return []
    groups = ((f"{reference} beats", wins), (f"{reference} loses to", losses), ("no significant difference from", ties))
    return ["## Summary", "", f"Every paired test below of {reference} against another method (p < 0.05; the base model "
            "left out; scopes as in each section):", "",
            *(f"- **{label}** ({len(items)}): " + ("; ".join(items) or "none") for label, items in groups)]


def main() -> None:
    params = load_params()
    study = Study(params)
    plots.drop_optional()
    total = model_parameters()
    parts = {
        "truthfulqa": sections.truthfulqa_section(study),
        "peft": sections.peft_section(study, total),
        "ood": sections.ood_section(study),
        "head_source": sections.head_source_section(study),
        "head_swap": sections.head_swap_section(study),
        "k_sweep": sections.k_sweep_section(study),
        "data_efficiency": sections.data_efficiency_section(study),
        "frontier": sections.frontier_section(study),
        "head_layers": sections.head_layers_section(study),
    }
    prefix = f"the first {study.limit}" if study.limit is not None else "all"
    lines = [
        "# LoFiT vs baselines and ablations",
        "",
        f"Backbone: `{params['model']['source']}`. Protocol (params.yaml `compare:`, pipelines/comparison/protocol.py): "
        "every trained method at the main run's epochs, batch size and training examples; its lr chosen from its grid "
        "by the task metric on val with the main seed, then trained with every seed; "
        f"{study.plan_note()}.",
        f"Tables 1 and 3 score the full test sets; the ablations and the frontier score {prefix} test examples, "
        "with every row of a table (LoFiT at its val-chosen lr included) read on that prefix.",
        "Values in %: mean ± sample sd over seeds (— with one seed), n = seeds, [95 % bootstrap CI over test examples, "
        "seeds averaged]; best per column in bold. 'A beats B' only where a paired test on the same examples "
        "(McNemar for one seed of right/wrong outcomes, else paired bootstrap) gives p < 0.05; otherwise the line says "
        "'not significant'.",
    ]
    body = [line for section_lines, _ in parts.values() for line in ["", *section_lines]]
    lines += ["", *summary(body), *body]
    with atomic_open(REPORTS / "comparison.md") as handle:
        handle.write("\n".join(lines) + "\n")
    write_json(REPORTS / "comparison.json", {key: data for key, (_, data) in parts.items() if data})


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__).parse_args()  # no options: --help only
    main()

"""DVC stage of compare/dvc.yaml: the paper's baselines and ablations next to LoFiT.

Reads the compare pipeline's evaluations (compare/runs/...) and the main study's runs; writes
reports/comparison.md, reports/comparison.json (a DVC metric) and reports/comparison/*.png.
Rows of one table score the same test examples: the compare evaluations scored the first
`compare.eval_limit` examples, so the main base and LoFiT rows are rescored on that prefix.
The work is in `comparison/`: `load` (files → `Study`), `sections` (tables), `plots` (figures).
"""

from __future__ import annotations

from common import REPORTS, load_params
from comparison import plots, sections
from comparison.load import Study, model_parameters, prefix_metrics

from lofit.io import atomic_open, write_json

__all__ = ["Study", "main", "prefix_metrics"]


def main() -> None:
    params = load_params()
    study = Study(params)
    plots.drop_optional()
    parts = {
        "truthfulqa": sections.truthfulqa_section(study),
        "peft": sections.peft_section(study, model_parameters()),
        "ood": sections.ood_section(study),
        "head_source": sections.head_source_section(study),
        "head_swap": sections.head_swap_section(study),
        "k_sweep": sections.k_sweep_section(study),
        "data_efficiency": sections.data_efficiency_section(study),
        "head_layers": sections.head_layers_section(study),
    }
    first = f"the first {study.limit}" if study.limit is not None else "all"
    lines = [
        "# LoFiT vs baselines and ablations",
        "",
        f"Backbone: `{params['model']['source']}`; main seed {params['seed']}, compare seeds {study.seeds}. Compare "
        f"evaluations score {first} test examples; the main base/LoFiT rows are rescored on the same prefix.",
        "Values in %: mean ± sample sd over seeds (— with one seed), n = seeds; best per column in bold.",
    ]
    for section_lines, _ in parts.values():
        lines += ["", *section_lines]
    with atomic_open(REPORTS / "comparison.md") as handle:
        handle.write("\n".join(lines) + "\n")
    write_json(REPORTS / "comparison.json", {key: data for key, (_, data) in parts.items() if data})


if __name__ == "__main__":
    main()

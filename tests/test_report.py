"""pipelines/report.py reads what the runs recorded: the head count is the adapter's, not params' top_k."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lofit.adapter import save_adapter
from lofit.families import HeadGeometry
from lofit.intervention import HeadIntervention

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def report(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "pipelines"))
    import report

    return report


def write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def test_heads_column_is_the_adapters_head_count_for_a_fractional_top_k(tmp_path, monkeypatch, report):
    monkeypatch.chdir(tmp_path)
    geometry = HeadGeometry(num_layers=5, num_heads=8, head_dim=4)  # 40 heads: top_k 0.05 became 2
    run = Path("runs/mq")
    save_adapter(HeadIntervention(geometry, components=("offset",), heads=[(0, 1), (3, 2)]), run / "tune/adapter",
                 base_model="tiny", model_type="llama")
    write(run / "tune/metrics.json", {"trainable_parameters": 8})
    for method in ("base", "lofit"):
        write(run / "eval" / method / "summary.json", {"exact_match": 0.5, "num_examples": 4})
    rows = report.run_rows({"runs": {"mq": {"task": "mquake", "tune": {"top_k": 0.05}}}})
    assert [(row["method"], row["heads"]) for row in rows] == [("base", 0), ("lofit", 2)]


def test_missing_adapter_is_one_line_naming_it(tmp_path, monkeypatch, report):
    monkeypatch.chdir(tmp_path)
    write(Path("runs/mq/tune/metrics.json"), {"trainable_parameters": 8})
    with pytest.raises(SystemExit, match=r"runs/mq/tune/adapter/adapter_config\.json: missing"):
        report.run_rows({"runs": {"mq": {"task": "mquake", "tune": {"top_k": 2}}}})

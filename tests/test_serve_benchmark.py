"""benchmarks/serve.py end to end in its tiny mode, old server included, so the script cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEASURE = {"requests", "tokens", "wall_s", "tokens_per_s", "latency_p50_s", "latency_p95_s"}


def test_serve_benchmark_measures_both_servers_adapters_and_cancellation(tmp_path):
    out = tmp_path / "serve.json"
    command = [
        sys.executable, str(ROOT / "benchmarks" / "serve.py"), "--tiny", "--clients", "1,3", "--requests", "1",
        "--max-tokens", "3", "--cancel-tokens", "200", "--out", str(out),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text(encoding="utf-8"))
    assert json.loads(result.stdout) == report
    assert set(report["concurrency"]) == {"1", "3"}
    for clients, row in report["concurrency"].items():
        for kind in ("old", "new"):
            assert set(row[kind]) == MEASURE, (clients, kind, row[kind])
            assert row[kind]["requests"] == int(clients) and row[kind]["tokens"] > 0
        assert row["speedup"] > 0
    adapters = report["adapters"]
    assert adapters["clients"] == 3 and adapters["adapters"] == 4
    assert all(set(run) == MEASURE and run["requests"] == 3 for run in adapters["single"] + adapters["mixed"])
    assert adapters["mixed_over_single"] > 0
    cancellation = report["cancellation"]
    assert len(cancellation["freed_after_close_s"]) == 3 and all(s >= 0 for s in cancellation["freed_after_close_s"])
    assert set(cancellation["next_request_latency_s"]) == {"old", "new"}

"""Wall time of every stage of a `dvc repro`, read from DVC's own "Running stage" lines.

Runs `dvc repro [ARGS...]` in the repository root, passes its output through (also to `--log`),
and prints one JSON object: the command, the total wall time and, per stage, the seconds from its
"Running stage 'NAME':" line to the next stage's (the last stage ends when dvc exits). Stages DVC
skips as unchanged take no time and are listed under `unchanged`.

    python benchmarks/pipeline_wall.py --out benchmarks/results/pipeline-cpu2.json
    python benchmarks/pipeline_wall.py --command 'exp run' --out benchmarks/results/pipeline-quick-cpu2.json -- --set-param profile=quick
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNNING = re.compile(r"^Running stage '([^']+)'")
UNCHANGED = re.compile(r"^Stage '([^']+)' didn't change, skipping")


def stage_times(events: list[tuple[float, str]], end: float) -> dict[str, float]:
    """Seconds per stage from (start time, stage) events in order; each ends where the next starts."""
    bounds = [start for start, _ in events[1:]] + [end]
    return {name: round(stop - start, 1) for (start, name), stop in zip(events, bounds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--command", default="repro", choices=("repro", "exp run"), help="dvc subcommand")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument("--log", default=None, help="also write dvc's output here")
    parser.add_argument("dvc_args", nargs="*", help="extra arguments for dvc (after --)")
    args = parser.parse_args()
    command = ["dvc", *args.command.split(), *args.dvc_args]
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    log = open(args.log, "w") if args.log else None
    started = time.time()
    events: list[tuple[float, str]] = []
    unchanged: list[str] = []
    with subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            now = time.time()
            for sink in (sys.stdout, log):
                if sink is not None:
                    sink.write(f"[{time.strftime('%H:%M:%S', time.localtime(now))}] {line}")
                    sink.flush()
            if match := RUNNING.match(line):
                events.append((now, match.group(1)))
            elif match := UNCHANGED.match(line):
                unchanged.append(match.group(1))
    end = time.time()
    if log is not None:
        log.close()
    result = {
        "command": " ".join(command),
        "returncode": process.returncode,
        "total_s": round(end - started, 1),
        "stages_s": stage_times(events, end),
        "unchanged": unchanged,
        "cpu_count": os.cpu_count(),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out and process.returncode == 0:
        Path(args.out).write_text(text + "\n")
    sys.exit(process.returncode)


if __name__ == "__main__":
    main()

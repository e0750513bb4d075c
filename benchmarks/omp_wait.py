"""Time forward passes of the real backbone with OMP_WAIT_POLICY unset vs PASSIVE, idle and contended.

Each configuration runs in a fresh process (libgomp reads the policy once, when torch loads it).
`contended` adds one busy-looping competitor process for the duration of the timing, as another
job on a shared CPU would. Prints one JSON object (and writes it to --out).
Usage: python benchmarks/omp_wait.py [--model data/models/base] [--steps 20] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lofit.threads import OMP_WAIT_ENV  # noqa: E402

BUSY_LOOP = "while True: pass"


def child(model: str, steps: int, batch: int, seq: int) -> dict:
    """Seconds per no-grad forward pass of a seeded random batch (after one warm-up pass)."""
    import torch

    from benchmarks.common import batch_for, timed_steps
    from lofit.backbone import BackboneConfig, load_backbone

    backbone = load_backbone(BackboneConfig(model=model))
    device = torch.device("cpu")
    inputs = batch_for(backbone, batch, seq, device)

    def forward() -> None:
        with torch.no_grad():
            backbone.model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])

    times, _ = timed_steps(forward, steps, device)
    return {"threads": torch.get_num_threads(), "forward_s_mean": round(sum(times) / len(times), 4)}


def measure(args: argparse.Namespace, policy: str | None, contended: bool) -> dict:
    env = {key: value for key, value in os.environ.items() if key != OMP_WAIT_ENV}
    if policy is not None:
        env[OMP_WAIT_ENV] = policy
    command = [sys.executable, __file__, "--child", "--model", args.model, "--steps", str(args.steps),
               "--batch", str(args.batch), "--seq", str(args.seq)]  # fmt: skip
    competitor = subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) if contended else None
    try:
        start = time.perf_counter()
        out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - start
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
    return json.loads(out.stdout.strip().splitlines()[-1]) | {"process_wall_s": round(wall, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="data/models/base")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.model, args.steps, args.batch, args.seq)))
        return

    from lofit.io import write_json

    report: dict = {"model": args.model, "steps": args.steps, "batch": [args.batch, args.seq], "cpus": os.cpu_count()}
    for load in ("idle", "contended"):
        rows = {name: measure(args, policy, load == "contended") for name, policy in (("unset", None), ("passive", "PASSIVE"))}
        rows["passive_vs_unset"] = round(rows["passive"]["forward_s_mean"] / rows["unset"]["forward_s_mean"], 3)
        report[load] = rows
    print(json.dumps(report))
    if args.out:
        write_json(args.out, report)


if __name__ == "__main__":
    main()

"""Time and peak memory of one LoFiT training step (step 1 and step 2), per backbone storage.

For each backbone (fp32, int8, nf4) it runs, on one batch of `--batch` × `--seq` tokens:
- `no_intervention`: forward + backward of the frozen model with the gradient flowing down to
  the input embeddings (the same depth of backward a step-1 intervention needs);
- `step1`: the HeadSelectionModule training step (scales on all heads, L1) + AdamW step;
- `step2`: the BiasTuningModule training step (offsets on the top `--top-k` heads) + AdamW step;
- `forward_*`: no-grad forward with and without the step-1 hooks (inference overhead).
Each storage runs in its own process so peak memory is per configuration. CPU peak is the
process's peak RSS (VmHWM, reset between phases); GPU peak is torch.cuda.max_memory_allocated.
Prints one JSON object.

    python benchmarks/training_step.py --steps 2                        # embedded SmolLM2 on CPU
    python benchmarks/training_step.py --random-7b --storage nf4 --device cuda --steps 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from common import STORAGES, batch_for, load, run_child, timed_steps, train_step

from lofit.backbone import Backbone
from lofit.training import BiasTuningModule, HeadSelectionModule, SelectionConfig, TuningConfig
from lofit.training.heads import HeadRanking, write_heads


def measure(fn: Callable[[], None], steps: int, device: torch.device) -> dict[str, float]:
    """Median seconds per call after one warm-up call, and the peak memory over all calls."""
    times, peak = timed_steps(fn, steps, device)
    return {"step_s": round(statistics.median(times), 4), "peak_mb": round(peak, 1)}


# ------------------------------------------------------------------ steps
def plain_step(backbone: Backbone, batch) -> Callable[[], None]:
    embed = backbone.model.get_input_embeddings()

    def step() -> None:
        inputs = embed(batch["input_ids"]).detach().requires_grad_(True)
        out = backbone.model(inputs_embeds=inputs, attention_mask=batch["attention_mask"], labels=batch["labels"])
        out.loss.backward()

    return step


def forward(backbone: Backbone, batch) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            backbone.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])

    return run


def bench_storage(args: argparse.Namespace, storage: str) -> dict:
    warnings.filterwarnings("ignore", message=".*MatMul8bitLt.*")
    device = torch.device(args.device)
    start = time.perf_counter()
    backbone = load(args.model, args.device, storage, args.random_7b)
    result: dict = {
        "load_s": round(time.perf_counter() - start, 1),
        "weights_mb": round(backbone.model.get_memory_footprint() / 2**20, 1),
        "heads": backbone.geometry.num_total_heads,
    }
    batch = batch_for(backbone, args.batch, args.seq, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    with autocast:
        result["forward_no_intervention"] = measure(forward(backbone, batch), args.steps, device)
        result["no_intervention"] = measure(plain_step(backbone, batch), args.steps, device)
        select = HeadSelectionModule(backbone, "sft", SelectionConfig()).to(device)
        with select.intervention.applied(backbone.model):
            result["forward_intervention"] = measure(forward(backbone, batch), args.steps, device)
            result["step1"] = measure(train_step(select, batch), args.steps, device)
            ranking = HeadRanking.from_scale(select.intervention.scale, backbone.name, backbone.geometry)
        with tempfile.TemporaryDirectory() as tmp:
            heads = write_heads(Path(tmp) / "heads.json", ranking)
            tune = BiasTuningModule(backbone, "sft", TuningConfig(heads=str(heads), top_k=args.top_k)).to(device)
        with tune.intervention.applied(backbone.model):
            result["step2"] = measure(train_step(tune, batch), args.steps, device)
    base = result["no_intervention"]["step_s"]
    result["step1_overhead_pct"] = round(100 * (result["step1"]["step_s"] / base - 1), 1)
    result["step2_overhead_pct"] = round(100 * (result["step2"]["step_s"] / base - 1), 1)
    fwd = result["forward_no_intervention"]["step_s"]
    result["forward_overhead_pct"] = round(100 * (result["forward_intervention"]["step_s"] / fwd - 1), 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--storage", nargs="+", choices=STORAGES, default=list(STORAGES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top-k", type=float, default=0.1, help="step-2 heads: fraction of all heads")
    parser.add_argument("--random-7b", action="store_true", help="random Llama-2-7B shape (use --device cuda)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # one storage in this process; print its JSON
        print(json.dumps(bench_storage(args, args.storage[0])))
        return
    results = {}
    for storage in args.storage:
        results[storage] = run_child([sys.executable, __file__, "--child", "--storage", storage, *child_args(args)])
    print(json.dumps({
        "model": "random-llama-2-7b-shape" if args.random_7b else args.model,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "batch": [args.batch, args.seq],
        "steps": args.steps,
        "results": results,
    }, indent=2))  # fmt: skip


def child_args(args: argparse.Namespace) -> list[str]:
    out = ["--model", args.model, "--device", args.device, "--batch", str(args.batch), "--seq", str(args.seq),
           "--steps", str(args.steps), "--top-k", str(args.top_k)]  # fmt: skip
    return out + (["--random-7b"] if args.random_7b else [])


if __name__ == "__main__":
    main()

"""Where a LoFiT training step spends its time, before (base commit) vs after, on real batches.

For each main-study run (TruthfulQA fold 0 DPO, MQuAKE SFT, CLUTRR SFT with train_size 300) it
takes the first `--batches` batches of the run's real training order (LoFiTDataModule, seed 42,
batch 8) and, in this one process, alternates the old and the new step on each batch:
- step time of step 1 (scales on all heads, L1) and step 2 (offsets on the run's own top-K heads
  from `--runs-dir`), forward + backward + clip + AdamW, median over the batches;
- the loss of both paths on every batch (both start from the same vectors and take the same steps);
- padded-token fraction (pads / tokens run) and logits computed per step (positions × vocab);
- a breakdown of one step-1 step: decoder body forward, LM head + loss, backward;
- the fixed cost of one extra chunk, fitted from body forward+backward times (the planner's overhead);
- step 2's lowest selected layer and the share of the step's time the frozen layers below it take.
The "old" path is `lofit/training/module.py` and `lofit/losses.py` of `--old-commit`, read from git.
Prints one JSON object.

    python benchmarks/training_profile.py --batches 3 --out benchmarks/results/training_profile-cpu2.json
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import load

from lofit.losses import answer_positions
from lofit.training import BiasTuningModule, DataConfig, HeadSelectionModule, SelectionConfig, TuningConfig
from lofit.training.answers import CHUNK_OVERHEAD_TOKENS, answer_logits, plan_chunks
from lofit.training.datamodule import LoFiTDataModule
from lofit.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]
RUNS = {  # run -> (task, options, step-1 lr and λ, K): params.yaml's main study
    "truthfulqa_fold0": ("truthfulqa", {"fold": 0}, 5e-3, 5e-4, 8),
    "mquake": ("mquake", {}, 5e-3, 1e-3, 27),
    "clutrr": ("clutrr", {"train_size": 300}, 5e-4, 5e-3, 27),
}


# ------------------------------------------------------------------ the old code, from git
def old_module_class(commit: str, scratch: Path):
    """`InterventionModule` of `commit`, its losses imported from that commit too."""
    def source(path: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:{path}"], check=True,
                              capture_output=True, text=True).stdout  # fmt: skip

    (scratch / "old_losses.py").write_text(source("lofit/losses.py"))
    module_source = source("lofit/training/module.py").replace("from lofit.losses import", "from old_losses import")
    (scratch / "old_module.py").write_text(module_source)
    sys.path.insert(0, str(scratch))
    spec = importlib.util.spec_from_file_location("old_module", scratch / "old_module.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.InterventionModule


def as_old(new, old_class):
    """The same step on the old code: a copy of `new`'s intervention inside the old module class."""
    penalty = type(new).penalty
    old_type = type(f"Old{type(new).__name__}", (old_class,), {"penalty": penalty, "export": lambda self, out: None})
    return old_type(new.backbone, copy.deepcopy(new.intervention), new.loss_kind, new.config)


# ------------------------------------------------------------------ measurements
def train_step(module, optimizer, batch) -> tuple[float, float]:
    """One optimisation step as Lightning runs it: (seconds, loss)."""
    start = time.perf_counter()
    with module.intervention.applied(module.backbone.model):
        loss = module.training_step(batch, 0)
        loss.backward()
    torch.nn.utils.clip_grad_norm_(module.intervention.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start, loss.item()


def token_counts(batch, vocab: int) -> dict[str, dict[str, int]]:
    """Tokens run, pads among them, and logits computed, by the old and the new path."""
    mask = batch["attention_mask"]
    rows, positions, _ = answer_positions(batch["labels"])
    needed = torch.zeros(mask.shape[0], dtype=torch.long).scatter_reduce_(0, rows, positions + 1, reduce="amax").tolist()
    real = mask.sum(dim=1).tolist()
    chunks = plan_chunks(needed)
    new_run = sum(len(chunk) * max(needed[r] for r in chunk) for chunk in chunks)
    return {
        "old": {"tokens": mask.numel(), "pads": mask.numel() - sum(real), "logits": mask.numel() * vocab},
        "new": {"tokens": new_run, "pads": new_run - sum(needed), "logits": rows.numel() * vocab, "chunks": len(chunks)},
    }


def breakdown(module, batch, new: bool) -> dict[str, float]:
    """Seconds of the decoder body forward, LM head + loss, and backward of one step-1 step."""
    model = module.backbone.model
    with module.intervention.applied(model):
        start = time.perf_counter()
        if new:
            answers = answer_logits(model, batch)  # body per chunk + head on answer positions
            body = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(answers.logits, answers.targets)
        else:
            hidden = model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            body = time.perf_counter()
            logits = model.get_output_embeddings()(hidden)[:, :-1].float()
            loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch["labels"][:, 1:], ignore_index=-100)
        head = time.perf_counter()
        loss.backward()
        done = time.perf_counter()
    module.intervention.zero_grad(set_to_none=True)
    return {"forward_s": round(body - start, 3), "head_and_loss_s": round(head - body, 3), "backward_s": round(done - head, 3)}


def chunk_overhead(module, rows_lengths: list[tuple[int, int]]) -> dict:
    """Fit seconds = a · tokens + b of body forward+backward (step-1 hooks) for (rows, length) shapes; b/a in tokens."""
    model = module.backbone.model
    points = []
    with module.intervention.applied(model):
        for rows, length in rows_lengths:
            ids = torch.randint(0, 1000, (rows, length), generator=torch.Generator().manual_seed(0))
            times = []
            for _ in range(2):
                start = time.perf_counter()
                model.base_model(input_ids=ids).last_hidden_state.sum().backward()
                times.append(time.perf_counter() - start)
            points.append((rows * length, min(times)))
    module.intervention.zero_grad(set_to_none=True)
    n = len(points)
    mean_x, mean_y = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x, _ in points)
    intercept = mean_y - slope * mean_x
    return {"points": [[x, round(y, 3)] for x, y in points], "s_per_token": round(slope, 5),
            "fixed_s": round(intercept, 4), "overhead_tokens": round(intercept / slope, 1),
            "planner_overhead_tokens": CHUNK_OVERHEAD_TOKENS}  # fmt: skip


def top_heads(runs_dir: Path, run: str, k: int) -> list[tuple[tuple[int, int], float]]:
    heads = json.loads((runs_dir / run / "select" / "heads.json").read_text())["heads"][:k]
    return [((h["layer"], h["head"]), h["score"]) for h in heads]


def bench_run(run: str, args, backbone, old_class) -> dict:
    name, options, lr, l1, k = RUNS[run]
    task = get_task(name, data_dir=args.data_dir, **options)
    data = LoFiTDataModule(task, backbone, DataConfig(batch_size=8), seed=42)
    loader = iter(data.train_dataloader())
    batches = [next(loader) for _ in range(args.batches)]
    vocab = backbone.model.get_output_embeddings().weight.shape[0]
    counts = [token_counts(batch, vocab) for batch in batches]
    result: dict = {"task": name, "loss": task.loss, "batches": args.batches, "rows_per_batch": batches[0]["input_ids"].shape[0]}
    for side in ("old", "new"):
        tokens = sum(c[side]["tokens"] for c in counts)
        result[f"padded_fraction_{side}"] = round(sum(c[side]["pads"] for c in counts) / tokens, 4)
        result[f"logits_per_step_{side}"] = round(sum(c[side]["logits"] for c in counts) / len(counts))
    result["chunks_per_batch"] = [c["new"]["chunks"] for c in counts]
    heads = top_heads(args.runs_dir, run, k)
    steps = {
        "step1": HeadSelectionModule(backbone, task.loss, SelectionConfig(lr=lr, l1_lambda=l1)),
        "step2": BiasTuningModule(backbone, task.loss, TuningConfig(heads="unused", top_k=k), top_heads=heads),
    }
    for step, new in steps.items():
        old = as_old(new, old_class)
        optimizers = {side: torch.optim.AdamW(m.intervention.parameters(), lr=1e-3) for side, m in (("old", old), ("new", new))}
        times = {"old": [], "new": []}
        losses = {"old": [], "new": []}
        for batch in batches:
            for side, module in (("old", old), ("new", new)):
                seconds, loss = train_step(module, optimizers[side], batch)
                times[side].append(seconds)
                losses[side].append(loss)
        old_s, new_s = statistics.median(times["old"]), statistics.median(times["new"])
        result[step] = {
            "step_s_old": round(old_s, 3), "step_s_new": round(new_s, 3), "ratio": round(new_s / old_s, 3),
            "loss_old": [round(x, 6) for x in losses["old"]], "loss_new": [round(x, 6) for x in losses["new"]],
            "max_abs_loss_diff": float(max(abs(a - b) for a, b in zip(losses["old"], losses["new"]))),
        }  # fmt: skip
    result["step1"]["breakdown_old"] = breakdown(steps["step1"], batches[0], new=False)
    result["step1"]["breakdown_new"] = breakdown(steps["step1"], batches[0], new=True)
    lowest = min(layer for (layer, _), _ in heads)
    forward = breakdown(steps["step2"], batches[0], new=True)["forward_s"]
    layers = backbone.geometry.num_layers
    result["step2"]["lowest_selected_layer"] = lowest
    result["step2"]["frozen_prefix_share_of_step"] = round(lowest / layers * forward / result["step2"]["step_s_new"], 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default_model = ROOT.parent / "main" / "data" / "models" / "base"
    parser.add_argument("--model", default=str(default_model) if default_model.is_dir() else "embedded:smollm2-135m-instruct")
    parser.add_argument("--data-dir", default=os.environ.get("LOFIT_DATA_MIRROR") or str(ROOT.parent / "main" / "data" / "raw"))
    parser.add_argument("--runs-dir", type=Path, default=ROOT.parent / "main" / "runs", help="holds <run>/select/heads.json")
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--old-commit", default="8b4f772")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    backbone = load(args.model, "cpu", "fp32", random_7b=False)
    with tempfile.TemporaryDirectory() as scratch:
        old_class = old_module_class(args.old_commit, Path(scratch))
        results = {run: bench_run(run, args, backbone, old_class) for run in args.runs}
        probe = HeadSelectionModule(backbone, "sft", SelectionConfig())
        overhead = chunk_overhead(probe, [(1, 32), (1, 128), (4, 32), (4, 128), (8, 64)])
    report = {
        "model": args.model, "device": "cpu", "threads": torch.get_num_threads(), "old_commit": args.old_commit,
        "chunk_overhead": overhead, "results": results,
    }  # fmt: skip
    text = json.dumps(report, indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

"""LoFiT next to its baselines (LoRA, RED): training-step cost, trainable size, generation speed.

Every training configuration sees the same batch (seeded token ids, `--batch` x `--seq`, SFT loss
on the last quarter of each row) and runs in its own process, so its peak memory is its own
(CPU: peak RSS; CUDA: torch.cuda.max_memory_allocated). Methods:
- `lofit_step1`: HeadSelectionModule, a scale on every head with the L1 penalty;
- `lofit_step2`: BiasTuningModule, offsets on the top `--top-k` heads of a seeded random ranking
  (it stands in for a step-1 ranking; the cost does not depend on which heads are chosen);
- `lora`: LoRAModule, rank `--lora-r` on q, k, v, o (peft);
- `red`: REDModule, a scale and a bias on every layer's FFN output.
One more process measures greedy generation tokens/s at `--gen-batch` (the best of
`--gen-repeats` runs) for the base model, LoFiT hooked and merged into o_proj, LoRA unmerged and
merged. Their trained values are random (N(0, 0.01^2), seed 0), so the hooks and the LoRA
branches compute what trained ones would. Prints one JSON object.

On a CPU shared with other work, set OMP_NUM_THREADS=1: with two OpenMP threads, one spins at
every barrier while the other is descheduled, and throughput drops about tenfold.

    OMP_NUM_THREADS=1 python benchmarks/methods.py --steps 3 --out benchmarks/results/methods-cpu2.json
    python benchmarks/methods.py --random-7b --storage nf4 --device cuda --steps 5
    python benchmarks/methods.py --tiny --steps 1 --new-tokens 4      # seconds per process; the test
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from common import STORAGES, batch_for, generation_speed, load, run_child, timed_steps, train_step
from peft.tuners.lora import LoraLayer

from lofit.backbone import Backbone, resolve_model_path, wrap_model
from lofit.convert import DEFAULT_MODEL
from lofit.intervention import HeadIntervention
from lofit.merge import merge_into
from lofit.methods.lora import DEFAULT_TARGETS, LoRAAdapter, LoRAModule, LoRAStepConfig
from lofit.methods.red import REDModule
from lofit.training import BiasTuningModule, HeadSelectionModule, SelectionConfig, TuningConfig
from lofit.training.heads import HeadRanking, resolve_top_k, write_heads
from lofit.training.module import InterventionModule

METHODS = ("lofit_step1", "lofit_step2", "lora", "red")
GENERATION_ROWS = ("base", "lofit_hooked", "lofit_merged", "lora", "lora_merged")
LORA_ALPHA = 16.0
INIT_STD = 1e-2  # of the random "trained" values in the generation rows
SEED = 0
PROMPT_TOKENS = 16


# ------------------------------------------------------------------ backbones
def tiny_llama(device: str) -> Backbone:
    """2 layers x 4 heads of 8 (2 KV heads), random weights, SmolLM2's tokenizer: runs in a second."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(DEFAULT_MODEL))
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="sdpa")
    return wrap_model(model.to(device), tokenizer, name="tiny-llama")


def backbone_for(args: argparse.Namespace) -> Backbone:
    if args.tiny:
        return tiny_llama(args.device)
    return load(args.model, args.device, args.storage, args.random_7b)


def random_ranking(backbone: Backbone) -> HeadRanking:
    """A seeded random head ranking, standing in for step 1's (which heads does not change the cost)."""
    g = backbone.geometry
    scale = torch.randn((g.num_layers, g.num_heads, g.head_dim), generator=torch.Generator().manual_seed(SEED))
    return HeadRanking.from_scale(scale, backbone.name, g)


def autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA (as training_step.py measures), none on CPU."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


# ------------------------------------------------------------------ training
def training_module(method: str, backbone: Backbone, args: argparse.Namespace) -> tuple[InterventionModule, str]:
    """The method's Lightning module and a line saying what it trains."""
    g = backbone.geometry
    if method == "lofit_step1":
        module = HeadSelectionModule(backbone, "sft", SelectionConfig())
        return module, f"scale on {g.num_total_heads} heads x {g.head_dim}"
    if method == "lofit_step2":
        with tempfile.TemporaryDirectory() as tmp:
            heads = write_heads(Path(tmp) / "heads.json", random_ranking(backbone))
            module = BiasTuningModule(backbone, "sft", TuningConfig(heads=str(heads), top_k=args.top_k))
        return module, f"offset on {len(module.head_scores)} heads x {g.head_dim}"
    if method == "lora":
        module = LoRAModule(backbone, "sft", LoRAStepConfig(r=args.lora_r, lora_alpha=LORA_ALPHA))
        linears = len(module.intervention.names)
        return module, f"r={args.lora_r} A and B on {linears} linears ({', '.join(DEFAULT_TARGETS)})"
    if method == "red":
        module = REDModule(backbone, "sft")
        edit = module.intervention
        return module, f"scale and bias on {edit.num_layers} layers x {edit.hidden_size}"
    raise ValueError(f"unknown method {method!r}; known: {METHODS}")


def bench_training(args: argparse.Namespace, method: str) -> dict:
    device = torch.device(args.device)
    backbone = backbone_for(args)
    total = backbone.model.num_parameters()  # before any LoRA wrapper is swapped in
    batch = batch_for(backbone, args.batch, args.seq, device)
    module, what = training_module(method, backbone, args)
    module.to(device).train()  # Lightning's fit puts the edit in train mode (LoRA's dropout is active)
    edit = module.intervention
    with autocast(device), edit.applied(backbone.model, backbone.family):
        times, peak = timed_steps(train_step(module, batch), args.steps, device)
    return {
        "step_s_mean": round(statistics.mean(times), 4),
        "step_s_min": round(min(times), 4),
        "step_s": [round(t, 4) for t in times],
        "peak_mb": round(peak, 1),
        "trainable": edit.num_trainable,
        "trainable_fraction": float(f"{edit.num_trainable / total:.4g}"),
        "optimizer_elements": sum(p.numel() for p in edit.parameters()),
        "trains": what,
        "model_parameters": total,
        "load_1m_end": os.getloadavg()[0],
    }


# ------------------------------------------------------------------ generation
def randomize(module: torch.nn.Module) -> None:
    """Overwrite every parameter with N(0, INIT_STD^2) values (seeded), like a trained edit's."""
    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * INIT_STD)


@contextmanager
def lora_merged(adapter: LoRAAdapter, backbone: Backbone) -> Iterator[None]:
    """The model with the LoRA update folded into its weights, undone on exit.

    peft's own merge, as `merge_and_unload` does it: each LoraLayer.merge() adds (alpha/r)·B·A to
    its base layer's weight, and the model holds those base layers, not the wrappers (detached).
    """
    with adapter.applied(backbone.model, backbone.family):
        wrappers = [module for module in backbone.model.modules() if isinstance(module, LoraLayer)]
    for wrapper in wrappers:
        wrapper.merge()
    try:
        yield
    finally:
        for wrapper in wrappers:
            wrapper.unmerge()


def bench_generation(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    backbone = backbone_for(args)
    model, family = backbone.model, backbone.family
    prompts = batch_for(backbone, args.gen_batch, PROMPT_TOKENS, device)
    prompts = {key: prompts[key] for key in ("input_ids", "attention_mask")}
    top_k = resolve_top_k(args.top_k, backbone.geometry.num_total_heads)
    heads = [head for head, _ in random_ranking(backbone).top(top_k)]
    offsets = HeadIntervention(backbone.geometry, ("offset",), heads=heads, init_std=INIT_STD,
                               generator=torch.Generator().manual_seed(SEED)).to(device)  # fmt: skip
    lora = LoRAAdapter(model, args.lora_r, LORA_ALPHA, lora_dropout=0.0, target_modules=DEFAULT_TARGETS, seed=SEED)
    randomize(lora)  # B starts at 0, which would make the branch's output a no-op

    def speed() -> float:
        """The best of `--gen-repeats` runs: a run slowed by other work on the machine does not count."""
        with autocast(device):
            runs = [generation_speed(model, prompts, args.new_tokens, backbone.tokenizer.pad_token_id)
                    for _ in range(args.gen_repeats)]  # fmt: skip
        return round(max(runs), 1)

    with autocast(device):
        generation_speed(model, prompts, 2, backbone.tokenizer.pad_token_id)  # warm-up, so "base" pays no start-up
    rows = {"base": speed()}
    with offsets.applied(model, family):
        rows["lofit_hooked"] = speed()
    with lora.applied(model, family):
        rows["lora"] = speed()
    with lora_merged(lora, backbone):
        rows["lora_merged"] = speed()
    merge_into(model, offsets, family)  # in place, so last
    rows["lofit_merged"] = speed()
    return {
        "tokens_per_s": {row: rows[row] for row in GENERATION_ROWS},
        "vs_base": {row: round(rows[row] / rows["base"], 3) for row in GENERATION_ROWS},
        "lofit_heads": top_k,
        "lora_linears": len(lora.names),
        "load_1m_end": os.getloadavg()[0],
    }


# ------------------------------------------------------------------ driver
def top_k_arg(text: str) -> int | float:
    """A head count ("27") or a fraction of all heads ("0.1"), as TuningConfig.top_k takes them."""
    return int(text) if text.isdigit() else float(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--storage", choices=STORAGES, default="fp32", help="frozen backbone storage")
    parser.add_argument("--random-7b", action="store_true", help="random Llama-2-7B shape (use --device cuda)")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer, 4-head random Llama (tests)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps after one warm-up step")
    parser.add_argument("--top-k", type=top_k_arg, default=0.1,
                        help="LoFiT step-2 heads: a count, or a fraction of all heads (0.1: 27 of 270)")  # fmt: skip
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--gen-batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--gen-repeats", type=int, default=3, help="generation runs per row; the fastest counts")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--child", choices=(*METHODS, "generation"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # one configuration in this process; print its JSON
        result = bench_generation(args) if args.child == "generation" else bench_training(args, args.child)
        print(json.dumps(result))
        return
    command = [sys.executable, __file__, *sys.argv[1:], "--child"]
    training = {method: run_child([*command, method]) for method in METHODS}
    generation = run_child([*command, "generation"])
    device = torch.device(args.device)
    report = {
        "model": "tiny-llama" if args.tiny else "random-llama-2-7b-shape" if args.random_7b else args.model,
        "device": args.device,
        "storage": args.storage,
        "threads": torch.get_num_threads(),
        "batch": [args.batch, args.seq],
        "steps": args.steps,
        "training": training,
        "generation": {"batch": args.gen_batch, "prompt_tokens": PROMPT_TOKENS, "new_tokens": args.new_tokens,
                       "repeats": args.gen_repeats, **generation},  # fmt: skip
        "setup": {
            "batches": "seeded random token ids (seed 0), the same for every method; SFT loss on the last quarter",
            "step": "module.training_step + backward + grad clip 1.0 + AdamW (lr 1e-3); one untimed warm-up step",
            "peak_mb": "torch.cuda.max_memory_allocated" if device.type == "cuda"
            else "peak RSS (VmHWM) of the method's own process over the timed steps",
            "trainable_fraction": "trainable / all parameters of the frozen model",
            "optimizer_elements": "elements AdamW holds; LoFiT keeps a full layers x heads x head_dim tensor, masked",
            "lofit_step2_heads": "top K of a seeded random ranking (a stand-in for step 1's)",
            "generation_values": f"LoFiT offsets and LoRA A, B drawn from N(0, {INIT_STD}^2), seed {SEED}",
            "generation_prompts": f"seeded random token ids, {PROMPT_TOKENS} per row, no padding",
            "tokens_per_s": "gen batch x new tokens / wall time of greedy model.generate (prefill included, "
            "EOS suppressed), the best of the repeats; one short untimed warm-up generation first",
            "load_1m_end": "1-minute load average when the configuration finished: this run's threads plus other work",
            "lofit_merged": "lofit.merge.merge_into: offsets folded into o_proj biases",
            "lora_merged": "peft's merge (LoraLayer.merge on every wrapper, wrappers swapped back for their "
            "base layers: the steps of merge_and_unload); lofit's LoRAAdapter offers no merge of its own",
        },
    }  # fmt: skip
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()

"""What the benchmark scripts share, so that their numbers are measured the same way.

Peak memory is per process (CPU: peak RSS from VmHWM; CUDA: max_memory_allocated), so scripts
that compare configurations run each one in its own child process (`run_child`). Batches are
random but seeded token ids, so every script and configuration sees the same tokens.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from lofit.backbone import Backbone, BackboneConfig, load_backbone, wrap_model
from lofit.data.collate import IGNORE_INDEX
from lofit.quantized import keep_4bit_differentiable

STORAGES = ("fp32", "int8", "nf4")


# ------------------------------------------------------------------ memory and time
def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux)


def peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def timed_steps(fn: Callable[[], None], steps: int, device: torch.device) -> tuple[list[float], float]:
    """Seconds of each of `steps` calls after one untimed warm-up call, and the peak MB over them.

    The warm-up pays the one-off costs (optimizer state, kernel caches) that a long run amortises.
    """
    fn()
    reset_peak(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return times, peak_mb(device)


# ------------------------------------------------------------------ backbones
def random_llama_7b(device: str, storage: str) -> Backbone:
    """A randomly initialised Llama-2-7B-shaped model (bf16), its linears swapped for 4-bit ones."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from lofit.backbone import resolve_model_path
    from lofit.convert import DEFAULT_MODEL

    config = LlamaConfig(
        vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
    )  # fmt: skip
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa")
    if storage == "nf4":
        quantize_linears_nf4(model.model, device)
        model.is_loaded_in_4bit = True  # as transformers' 4-bit loader marks it; peft then builds 4-bit LoRA layers
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(DEFAULT_MODEL))  # only pad/EOS ids are used
    return wrap_model(model, tokenizer, name="random-llama-2-7b-shape")


def quantize_linears_nf4(module: torch.nn.Module, device: str) -> None:
    import bitsandbytes as bnb

    for name, child in module.named_children():
        if isinstance(child, torch.nn.Linear):
            q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                  compute_dtype=torch.bfloat16, quant_type="nf4")  # fmt: skip
            q.weight = bnb.nn.Params4bit(child.weight.data.cpu(), requires_grad=False, quant_type="nf4")
            setattr(module, name, q.to(device))
        else:
            quantize_linears_nf4(child, device)


def load(model: str, device: str, storage: str, random_7b: bool) -> Backbone:
    """The frozen backbone of a benchmark, its 4-bit layers kept differentiable.

    Without that, CPU no-grad passes repack nf4 weights and cut the gradient.
    """
    if random_7b:
        backbone = random_llama_7b(device, storage)
    else:
        quantization = {"fp32": "none", "int8": "int8", "nf4": "nf4"}[storage]
        backbone = load_backbone(BackboneConfig(model=model, dtype="float32", device=device, quantization=quantization))
    keep_4bit_differentiable(backbone.model)
    return backbone


# ------------------------------------------------------------------ batches and steps
def batch_for(backbone: Backbone, size: int, seq: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Random tokens (seed 0) the model can embed; the last quarter of every row is the answer.

    The bound is the smaller of tokenizer and embedding sizes: the random 7B shape has 32000
    embeddings but borrows SmolLM2's 49152-token tokenizer.
    """
    vocab = min(len(backbone.tokenizer), backbone.model.get_input_embeddings().num_embeddings)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (size, seq), generator=generator)
    labels = ids.clone()
    labels[:, : seq - seq // 4] = IGNORE_INDEX
    batch = {"index": torch.arange(size), "input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    return {key: value.to(device) for key, value in batch.items()}


def train_step(module, batch: dict[str, torch.Tensor]) -> Callable[[], None]:
    """One optimisation step as the Lightning loop runs it: training_step, backward, clip at 1, AdamW."""
    optimizer = torch.optim.AdamW(module.intervention.parameters(), lr=1e-3, weight_decay=0.0)

    def step() -> None:
        loss = module.training_step(batch, 0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.intervention.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def generation_speed(
    model: torch.nn.Module, encoded: Mapping[str, torch.Tensor], new_tokens: int, pad_id: int
) -> float:
    """Generated tokens per second of greedy decoding of exactly `new_tokens` tokens per row (prefill included)."""
    device = next(model.parameters()).device
    inputs = {key: value.to(device) for key, value in encoded.items()}
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                             pad_token_id=pad_id)  # fmt: skip
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    return (out.shape[1] - inputs["input_ids"].shape[1]) * out.shape[0] / elapsed


# ------------------------------------------------------------------ processes
def run_child(command: list[str]) -> dict:
    """Run one configuration in a fresh process (its own peak memory); its JSON is the last stdout line."""
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])

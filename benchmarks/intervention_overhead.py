"""Cost of the hooked intervention: training-step time/memory and greedy generation speed.

Compares, on the same batches, (a) a forward+backward of the frozen model with the gradient
flowing from the loss down to the input embeddings and no intervention, against (b) the same
with per-head scales and offsets on all heads; and greedy generation tokens/s for the base,
hooked and merged models. Prints one JSON object.

    python benchmarks/intervention_overhead.py --steps 5 --gen-tokens 64
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from common import generation_speed, peak_mb

from lofit.backbone import BackboneConfig, load_backbone
from lofit.intervention import HeadIntervention
from lofit.merge import merge_into


def time_steps(model, batch, steps: int, trainable: list[torch.Tensor], embeds_require_grad: bool) -> list[float]:
    times = []
    embed = model.get_input_embeddings()
    for _ in range(steps + 1):  # first step warms up
        start = time.perf_counter()
        inputs = embed(batch).detach().requires_grad_(embeds_require_grad)
        loss = model(inputs_embeds=inputs, labels=batch).loss
        loss.backward()
        for t in trainable:
            t.grad = None
        times.append(time.perf_counter() - start)
    return times[1:]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--gen-tokens", type=int, default=64)
    parser.add_argument("--gen-batch", type=int, default=16)
    args = parser.parse_args()
    backbone = load_backbone(BackboneConfig(model=args.model))
    model = backbone.model
    torch.manual_seed(0)
    batch = torch.randint(0, len(backbone.tokenizer), (args.batch, args.seq))

    plain = time_steps(model, batch, args.steps, [], embeds_require_grad=True)
    intervention = HeadIntervention(backbone.geometry, ("scale", "offset"), init_std=1e-3,
                                    generator=torch.Generator().manual_seed(0))
    with intervention.applied(model):
        hooked = time_steps(model, batch, args.steps, list(intervention.parameters()), embeds_require_grad=True)

    tokenizer = backbone.tokenizer
    tokenizer.padding_side = "left"
    prompt = "Q: What happens if you eat watermelon seeds? A:"
    prompts = tokenizer([prompt] * args.gen_batch, return_tensors="pt", padding=True)
    offsets = HeadIntervention(backbone.geometry, ("offset",), init_std=1e-2, generator=torch.Generator().manual_seed(0))
    gen = {"base": generation_speed(model, prompts, args.gen_tokens, tokenizer.pad_token_id)}
    with offsets.applied(model):
        gen["hooked"] = generation_speed(model, prompts, args.gen_tokens, tokenizer.pad_token_id)
    merge_into(model, offsets)
    gen["merged"] = generation_speed(model, prompts, args.gen_tokens, tokenizer.pad_token_id)

    plain_s, hooked_s = statistics.median(plain), statistics.median(hooked)
    print(json.dumps({
        "model": args.model,
        "threads": torch.get_num_threads(),
        "batch": [args.batch, args.seq],
        "train_step_s": {"no_intervention": round(plain_s, 3), "intervention": round(hooked_s, 3)},
        "train_step_overhead_pct": round(100 * (hooked_s / plain_s - 1), 2),
        "generation_tokens_per_s": {k: round(v, 1) for k, v in gen.items()},
        "generation_batch": args.gen_batch,
        "hooked_vs_base": round(gen["hooked"] / gen["base"], 3),
        "merged_vs_base": round(gen["merged"] / gen["base"], 3),
        "peak_rss_mb": round(peak_mb(torch.device("cpu")), 1),
    }, indent=2))


if __name__ == "__main__":
    main()

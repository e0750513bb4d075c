"""The training forward: logits only where the loss reads them, rows run in length-grouped chunks.

A batch arrives right-padded to its longest row, and the losses read the logits of answer
positions only (`lofit.losses.answer_positions`). So this forward
- runs each row only up to the last position the loss reads (the final EOS predicts nothing),
- sorts the rows by that length and runs them in chunks (`plan_chunks`), each padded only to its
  own longest row; a chunk without padding gets no attention mask (SDPA's causal fast path),
- applies the LM head once, to the answer positions' final hidden states of all chunks, in the
  batch's row-major token order.
Causal attention makes every kept position's output independent of the tokens cut or padded
away, so the loss equals the full-logits one up to float rounding, and the batch loss is still
computed once (one backward; DPO pairs split across chunks are fine). The decoder body is
`model.base_model`, which every family's `*ForCausalLM.forward` calls before its LM head; the
one thing those forwards do after the head, Gemma's `final_logit_softcapping`, is applied here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lofit.losses import AnswerLogits, answer_positions

# A chunk's fixed cost (the per-layer work that does not scale with tokens), in padded-token
# equivalents of a SmolLM2-135M training step on the 2-core CPU (benchmarks/training_profile.py).
CHUNK_OVERHEAD_TOKENS = 20


def plan_chunks(lengths: Sequence[int], overhead: float = CHUNK_OVERHEAD_TOKENS) -> list[list[int]]:
    """Row indices grouped into chunks of similar length, minimising Σ(rows × longest) + overhead × chunks.

    Rows are sorted by length (ties by index) and cut into consecutive runs by a small dynamic
    programme; rows of length 0 need no forward and are left out.
    """
    order = sorted((row for row, length in enumerate(lengths) if length > 0), key=lambda row: (lengths[row], row))
    best = [0.0] + [float("inf")] * len(order)
    cut = [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        longest = lengths[order[end - 1]]
        for start in range(end):
            cost = best[start] + (end - start) * longest + overhead
            if cost < best[end]:
                best[end], cut[end] = cost, start
    chunks: list[list[int]] = []
    end = len(order)
    while end > 0:
        chunks.append(order[cut[end] : end])
        end = cut[end]
    return chunks[::-1]


def head_logits(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """What the causal LM's forward makes of final hidden states: LM head, then soft-capping if any, as float32."""
    logits = model.get_output_embeddings()(hidden)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return logits.float()


def answer_logits(model: nn.Module, batch: dict[str, torch.Tensor], overhead: float = CHUNK_OVERHEAD_TOKENS) -> AnswerLogits:
    """The logits of a batch's answer positions, computed chunk by chunk (see the module docstring)."""
    labels, input_ids, attention_mask = batch["labels"], batch["input_ids"], batch["attention_mask"]
    rows, positions, targets = answer_positions(labels)
    needed = torch.zeros(labels.shape[0], dtype=torch.long, device=labels.device)
    needed.scatter_reduce_(0, rows, positions + 1, reduce="amax")
    lengths = needed.tolist()
    body = model.base_model
    parts, order = [], []
    for chunk in plan_chunks(lengths, overhead):
        width = max(lengths[row] for row in chunk)
        index = torch.tensor(chunk, device=labels.device)
        mask = attention_mask[index, :width]
        hidden = body(
            input_ids=input_ids[index, :width], attention_mask=None if bool(mask.all()) else mask, use_cache=False
        ).last_hidden_state
        local = torch.full_like(needed, -1)
        local[index] = torch.arange(len(chunk), device=labels.device)
        tokens = (local[rows] >= 0).nonzero(as_tuple=True)[0]
        parts.append(hidden[local[rows[tokens]], positions[tokens]])
        order.append(tokens)
    if parts:
        picked = torch.cat(parts).index_select(0, torch.cat(order).argsort())
    else:
        weight = model.get_output_embeddings().weight
        picked = weight.new_zeros(0, weight.shape[1])
    return AnswerLogits(head_logits(model, picked), targets, rows, labels.shape[0])

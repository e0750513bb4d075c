"""Contrast data with a planted signal: only one chosen site of a tiny model knows which statements are true.

True and false answers are drawn from the same word pool and assigned at random, so the model
itself carries no label information; a hook then adds `strength · direction` to one site
(one head's slice of an `o_proj` input, or one decoder layer's output) for the rows whose token
sequence is a true statement. Anything a method recovers about the label must come from there.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Iterator

import torch

from lofit.backbone import Backbone
from lofit.families import decoder_layers, o_projections
from lofit.methods.contrast import ContrastQuestion, labeled_statements

WORDS = (
    "apple river stone cloud lamp garden window pepper violin harbor candle forest mirror ladder "
    "silver orange tunnel meadow rocket blanket"
).split()


def random_questions(n: int = 24, per_side: int = 2, seed: int = 0) -> list[ContrastQuestion]:
    rng = random.Random(seed)
    questions = []
    for index in range(n):
        answers = rng.sample(WORDS, 2 * per_side)
        questions.append(
            ContrastQuestion(f"what is item {index}?", tuple(answers[:per_side]), tuple(answers[per_side:]))
        )
    return questions


def unit_vector(dim: int, seed: int = 1) -> torch.Tensor:
    vector = torch.randn(dim, generator=torch.Generator().manual_seed(seed))
    return vector / vector.norm()


@contextmanager
def planted(
    backbone: Backbone,
    questions: list[ContrastQuestion],
    direction: torch.Tensor,
    strength: float,
    head: tuple[int, int] | None = None,
    layer: int | None = None,
) -> Iterator[None]:
    """Add `strength · direction` for true statements to head `head`'s o_proj input or to layer `layer`'s output."""
    statements, labels, _ = labeled_statements(questions)
    truth = {tuple(backbone.encode_prompt(*pair)): bool(label) for pair, label in zip(statements, labels.tolist())}
    rows: list[torch.Tensor] = []

    def remember(_module, _args, kwargs):
        ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
        keys = [tuple(row[m.bool()].tolist()) for row, m in zip(ids, mask)]
        rows[:] = [torch.tensor([truth.get(key, False) for key in keys], dtype=torch.float32)]

    def shift(tensor: torch.Tensor) -> torch.Tensor:
        return rows[0].to(tensor.dtype)[:, None, None] * strength * direction.to(tensor.dtype)

    handles = [backbone.model.register_forward_pre_hook(remember, with_kwargs=True)]
    if head is not None:
        g = backbone.geometry
        layer_index, head_index = head

        def head_hook(_module, args):
            z = args[0].reshape(*args[0].shape[:-1], g.num_heads, g.head_dim).clone()
            z[:, :, head_index] += shift(z)
            return (z.reshape(args[0].shape), *args[1:])

        proj = o_projections(backbone.model, backbone.family)[layer_index]
        handles.append(proj.register_forward_pre_hook(head_hook))
    if layer is not None:

        def layer_hook(_module, _args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            hidden = hidden + shift(hidden)
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

        handles.append(decoder_layers(backbone.model, backbone.family)[layer].register_forward_hook(layer_hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()

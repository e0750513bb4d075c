"""Contrast statements for the training-free baselines, and last-token activations of a frozen model.

ITI and RepE both read a model's internal states on true and false statements: a task's prompt
continued by an answer (`ContrastQuestion`, from `Task.contrasts`; TruthfulQA's are
"Q: {question} A:" + " {answer}", ITI's format). This module lists the statements, splits
questions (never statements, so no question leaks across the split) into a fit part and a
validation part, and collects the activation at the last token of each statement at a set of
modules (the input of `o_proj` for ITI, a decoder layer's output for RepE).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from lofit.backbone import Backbone
from lofit.data.collate import pad_right
from lofit.data.examples import ContrastQuestion

Site = Literal["input", "output"]
Statement = tuple[str, str]  # (prompt, continuation), encoded as `Backbone.encode_prompt` does


def check_questions(questions: Sequence[ContrastQuestion], minimum: int = 2) -> None:
    """One-line errors for too few questions or a question lacking true or false answers."""
    if len(questions) < minimum:
        raise ValueError(f"need at least {minimum} contrast questions (a fit and a validation part), got {len(questions)}")
    for index, item in enumerate(questions):
        if not item.true or not item.false:
            raise ValueError(f"contrast question {index} ({item.prompt[:40]!r}) needs at least one true and one false answer")


def labeled_statements(questions: Sequence[ContrastQuestion]) -> tuple[list[Statement], torch.Tensor, torch.Tensor]:
    """All statements, their labels (1 = true) and the index of their question."""
    statements: list[Statement] = []
    labels: list[int] = []
    groups: list[int] = []
    for index, item in enumerate(questions):
        for label, answers in ((1, item.true), (0, item.false)):
            for answer in answers:
                statements.append(item.statement(answer))
                labels.append(label)
                groups.append(index)
    return statements, torch.tensor(labels, dtype=torch.long), torch.tensor(groups, dtype=torch.long)


def split_questions(num_questions: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Question indices of the fit and validation parts (seeded shuffle; each part non-empty)."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if num_questions < 2:
        raise ValueError(f"splitting needs at least 2 questions, got {num_questions}")
    order = torch.randperm(num_questions, generator=torch.Generator().manual_seed(seed))
    num_val = min(num_questions - 1, max(1, round(val_fraction * num_questions)))
    return order[num_val:].sort().values, order[:num_val].sort().values


def in_groups(groups: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the rows whose group is in `chosen`."""
    return torch.isin(groups, chosen)


def last_token_activations(
    backbone: Backbone,
    statements: Sequence[Statement],
    modules: Sequence[nn.Module],
    site: Site,
    batch_size: int = 16,
) -> torch.Tensor:
    """Float32 CPU tensor (N, len(modules), dim): each module's input or output at each statement's last token.

    `input` reads the first positional argument seen by the module (after any pre-hooks already
    registered on it, e.g. an attached intervention); `output` reads its output (the first element
    when it returns a tuple). Statements are encoded as task prompts with their continuation
    (`Backbone.encode_prompt`: the family's BOS rule, the backbone's prompt format) and right-padded.
    """
    if not statements:
        raise ValueError("no statements to read activations from")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if site not in ("input", "output"):
        raise ValueError(f"site must be 'input' or 'output', got {site!r}")
    model = backbone.model
    device = next(model.parameters()).device
    captured: list[torch.Tensor | None] = [None] * len(modules)
    last: torch.Tensor | None = None

    def reader(slot: int):
        def read(tensor: torch.Tensor) -> None:
            rows = torch.arange(tensor.shape[0], device=tensor.device)
            captured[slot] = tensor[rows, last.to(tensor.device)].float().cpu()

        if site == "input":
            return lambda _module, args: read(args[0])
        return lambda _module, _args, output: read(output[0] if isinstance(output, tuple) else output)

    register = "register_forward_pre_hook" if site == "input" else "register_forward_hook"
    handles = [getattr(module, register)(reader(slot)) for slot, module in enumerate(modules)]
    pad = backbone.tokenizer.pad_token_id
    chunks = []
    try:
        for start in range(0, len(statements), batch_size):
            ids = [backbone.encode_prompt(prompt, continuation) for prompt, continuation in statements[start : start + batch_size]]
            input_ids = pad_right(ids, pad).to(device)
            mask = pad_right([[1] * len(seq) for seq in ids], 0).to(device)
            last = torch.tensor([len(seq) - 1 for seq in ids])
            captured[:] = [None] * len(modules)
            with torch.no_grad():
                model(input_ids=input_ids, attention_mask=mask, use_cache=False)
            if any(item is None for item in captured):
                raise RuntimeError("a hooked module did not run during the forward pass")
            chunks.append(torch.stack(captured, dim=1))
    finally:
        for handle in handles:
            handle.remove()
    return torch.cat(chunks)

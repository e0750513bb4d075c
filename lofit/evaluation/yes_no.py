"""Binary Yes/No scoring from the first answer token (TALLRec's AUC protocol).

The score of a prompt is P(Yes) / (P(Yes) + P(No)) over the next-token distribution after the
prompt, i.e. sigmoid(logit[yes] - logit[no]), where yes/no are the first tokens of the two
answers exactly as training tokenizes them (`backbone.encode(answer, add_bos=False)`, the answer
encoded apart from its prompt; see lofit/data/collate.py). The prompt is encoded as training
encodes it too (BOS per family + prompt). Reported: AUC (torchmetrics `BinaryAUROC`) and accuracy
with the threshold 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torchmetrics.classification import BinaryAUROC

from lofit.data.collate import pad_right
from lofit.evaluation import check_batch_size, check_examples, write_results

if TYPE_CHECKING:
    from lofit.backbone import Backbone


@dataclass(frozen=True)
class YesNoItem:
    """A prompt, its true label (True: the answer is the positive one) and fields kept in the row."""

    prompt: str
    label: bool
    fields: dict


def answer_token_ids(backbone: Backbone, positive: str, negative: str) -> tuple[int, int]:
    """First token of each answer as training tokenizes it; they must differ to be told apart."""
    ids = []
    for answer in (positive, negative):
        tokens = backbone.encode(answer, add_bos=False)
        if not tokens:
            raise ValueError(f"answer {answer!r} encodes to no tokens")
        ids.append(tokens[0])
    if ids[0] == ids[1]:
        raise ValueError(f"answers {positive!r} and {negative!r} share their first token {ids[0]}; their logits cannot tell them apart")
    return ids[0], ids[1]


@torch.no_grad()
def positive_probabilities(backbone: Backbone, prompts: Sequence[str], token_ids: tuple[int, int], batch_size: int) -> list[float]:
    """P(positive) / (P(positive) + P(negative)) of the token after each prompt (float64)."""
    check_batch_size(batch_size)
    device = next(backbone.model.parameters()).device
    pad = backbone.tokenizer.pad_token_id if backbone.tokenizer.pad_token_id is not None else 0
    scores: list[float] = []
    for start in range(0, len(prompts), batch_size):
        encoded = [backbone.encode_prompt(prompt) for prompt in prompts[start : start + batch_size]]
        input_ids = pad_right(encoded, pad).to(device)
        attention_mask = pad_right([[1] * len(ids) for ids in encoded], 0).to(device)
        logits = backbone.model(input_ids=input_ids, attention_mask=attention_mask).logits
        last = torch.tensor([len(ids) - 1 for ids in encoded], device=device)
        pair = logits[torch.arange(len(encoded), device=device), last][:, list(token_ids)].double()
        scores.extend(torch.sigmoid(pair[:, 0] - pair[:, 1]).tolist())
    return scores


def binary_auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve; undefined (an error) unless both classes occur."""
    if len(set(labels)) < 2:
        raise ValueError(f"AUC needs both labels among the {len(labels)} examples scored (a larger limit or split)")
    metric = BinaryAUROC(thresholds=None)
    metric.update(torch.tensor(scores, dtype=torch.float64), torch.tensor(labels, dtype=torch.long))
    return float(metric.compute())


def evaluate_yes_no(
    backbone: Backbone,
    items: Sequence[YesNoItem],
    answers: tuple[str, str],
    out_dir: str | Path | None = None,
    batch_size: int = 16,
) -> dict[str, float]:
    """AUC and accuracy at 0.5 of the first-token scores; one row per item with its score."""
    check_examples(items)
    token_ids = answer_token_ids(backbone, *answers)
    scores = positive_probabilities(backbone, [item.prompt for item in items], token_ids, batch_size)
    labels = [item.label for item in items]
    predictions = [score > 0.5 for score in scores]
    summary = {
        "auc": binary_auc(scores, labels),
        "accuracy": sum(p == y for p, y in zip(predictions, labels)) / len(items),
        "n": float(len(items)),
    }
    rows = [
        item.fields | {"label": answers[0] if item.label else answers[1], "p_yes": score, "prediction": answers[0] if pred else answers[1]}
        for item, score, pred in zip(items, scores, predictions)
    ]
    write_results(out_dir, rows, summary)
    return summary

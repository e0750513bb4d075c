"""Pick a training-free method's settings (ITI's K and α, RepE's layers and α) on validation data.

The grid is scored on the task's validation split only; test data never sees a candidate that
is not the final choice.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def grid(**values: Sequence[Any]) -> list[dict[str, Any]]:
    """Every combination of the named values, in the order given (first name varies slowest)."""
    for name, options in values.items():
        if isinstance(options, (str, bytes)) or not options:
            raise ValueError(f"the search grid's '{name}' must be a non-empty list, got {options!r}")
    names = list(values)
    return [dict(zip(names, combo)) for combo in itertools.product(*values.values())]


def best_on_validation(
    candidates: Sequence[Mapping[str, Any]],
    score: Callable[[Mapping[str, Any]], Mapping[str, float]],
    keys: Sequence[str],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Score every candidate; the best maximises `keys` in order (ties: the earlier candidate).

    Returns (best candidate, one row per candidate with its settings and scores).
    """
    if not candidates:
        raise ValueError("the search grid is empty")
    rows = []
    for candidate in candidates:
        metrics = score(candidate)
        missing = [key for key in keys if key not in metrics]
        if missing:
            raise KeyError(f"the validation scores lack {missing} (have {sorted(metrics)})")
        rows.append({**candidate, **{key: float(metrics[key]) for key in keys}})
    best = max(range(len(rows)), key=lambda i: (tuple(rows[i][key] for key in keys), -i))
    return dict(candidates[best]), rows

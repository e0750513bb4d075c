"""Per-device sample sizes: evaluation stages that are slow on a CPU read `{cpu: N, cuda: M}`."""

from __future__ import annotations

from typing import Any


def limit_for(params: dict[str, Any], section: str, key: str = "limit") -> int | None:
    """`params[section][key]` for the backbone's device kind (None = the full set)."""
    limits = params[section][key]
    kind = "cuda" if str(params["model"]["device"]).startswith("cuda") else "cpu"
    if kind not in limits:
        raise SystemExit(f"params.yaml: {section}.{key} has no '{kind}' entry")
    return limits[kind]

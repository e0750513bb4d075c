"""DVC stage `prepare_model`: convert the embedded GGUF (or copy nothing for a real checkpoint).

Usage: python pipelines/prepare_model.py --model embedded:smollm2-135m-instruct --out data/models/base
"""

from __future__ import annotations

import argparse
import sys

from lofit.backbone import EMBEDDED_PREFIX, convert_gguf, embedded_gguf_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="embedded:NAME (converted to --out)")
    parser.add_argument("--out", required=True, help="folder to write the safetensors model into")
    args = parser.parse_args(argv)
    if not args.model.startswith(EMBEDDED_PREFIX):
        print(f"prepare_model: '{args.model}' is not an embedded model; point backbone.model at it directly", file=sys.stderr)
        return 2
    try:
        convert_gguf(embedded_gguf_path(args.model[len(EMBEDDED_PREFIX) :]), args.out)
    except (FileNotFoundError, ValueError) as err:
        print(f"prepare_model: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""DVC stage `prepare_model`: materialise the backbone as a plain safetensors folder (lofit.convert).

Usage: python pipelines/prepare_model.py --model embedded:smollm2-135m-instruct --out data/models/base
"""

from __future__ import annotations

import argparse
import sys

from lofit.threads import prefer_passive_omp_wait

prefer_passive_omp_wait()  # before lofit.convert's conversion loads torch

from lofit.convert import materialise  # noqa: E402


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

"""Place the pinned raw data files under --dest (from a mirror folder or by download), sha256-checked."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lofit.data.sources import MIRROR_ENV, DataSourceError, prepare  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dest", default="data/raw", help="where the raw files go (default data/raw)")
    parser.add_argument("--mirror", default=None, help=f"folder laid out like data/raw (default ${MIRROR_ENV}, else download)")
    parser.add_argument("--tasks", nargs="*", default=None, help="only these tasks' files (default all)")
    args = parser.parse_args(argv)
    try:
        placed = prepare(args.dest, mirror=args.mirror, tasks=args.tasks)
    except (DataSourceError, ValueError) as err:
        print(f"prepare_data: {err}", file=sys.stderr)
        return 1
    print(f"prepare_data: {len(placed)} files verified under {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Build MovieLens-100K's task files (ratings.tsv, movies.tsv) under a folder, never for pushing.

From GroupLens' ml-100k.zip when `--zip` is given (its ratings must convert to exactly the pinned
wheel's), else from the pinned RecBole 1.2.1 wheel (`--wheel`, $LOFIT_RECBOLE_WHEEL, the lofit
cache, or downloaded from PyPI). The licence forbids redistribution: the output is local only.

    python pipelines/prepare_movielens.py --dest data/restricted/movielens [--zip ml-100k.zip | --wheel recbole-1.2.1-py3-none-any.whl]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lofit.data.movielens import prepare_movielens  # noqa: E402
from lofit.data.readers import RawDataError  # noqa: E402
from lofit.data.sources import DataSourceError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", default="data/restricted/movielens", help="folder for ratings.tsv and movies.tsv")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--zip", dest="zip_path", help="a local ml-100k.zip (GroupLens)")
    source.add_argument("--wheel", dest="wheel_path", help="a local recbole-1.2.1-py3-none-any.whl")
    args = parser.parse_args(argv)
    try:
        for path in prepare_movielens(args.dest, zip_path=args.zip_path, wheel_path=args.wheel_path):
            print(path)
    except (RawDataError, DataSourceError) as err:
        print(f"prepare_movielens: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

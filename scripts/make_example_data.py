"""Write the example dataset of the "Your own data" guide: data/examples/arithmetic.jsonl.

Self-made (nothing copied): two-number additions and subtractions phrased as questions, with
the user's own column names (`question`, `result`) and, per row, three wrong results next to the
right one (`options`, `correct`) so the same file also serves a multiple-choice evaluation.
Deterministic: the same seed writes the same bytes.

    python scripts/make_example_data.py            # 120 rows, seed 0
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from lofit.io import atomic_open

DEFAULT_OUT = Path("data/examples/arithmetic.jsonl")


def make_rows(count: int, seed: int) -> list[dict]:
    """`count` distinct questions with their result, a wrong one (`wrong`) and four shuffled options."""
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < count:
        a, b, op = rng.randint(2, 49), rng.randint(2, 49), rng.choice("+-")
        if (a, b, op) in seen:
            continue
        seen.add((a, b, op))
        result = a + b if op == "+" else a - b
        words = "plus" if op == "+" else "minus"
        wrong = sorted({result + delta for delta in (-10, -2, -1, 1, 2, 10)} - {result})
        options = [result, *rng.sample(wrong, 3)]
        rng.shuffle(options)
        rows.append(
            {
                "question": f"What is {a} {words} {b}?",
                "result": str(result),
                "wrong": str(options[0] if options[0] != result else options[1]),
                "options": [str(option) for option in options],
                "correct": options.index(result),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--rows", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(args.out) as handle:
        handle.writelines(json.dumps(row) + "\n" for row in make_rows(args.rows, args.seed))
    print(f"wrote {args.rows} rows to {args.out}")


if __name__ == "__main__":
    main()

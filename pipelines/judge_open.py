"""DVC stages `judge_open@RUN-METHOD`: truthful / informative verdicts on the generated answers.

Without a judge (no API key in `judge.api_key_env` and no `judge.base_url`) the summary records
`judged: false` and the reason, and the pipeline continues; `judge.require: true` fails instead.
"""

from __future__ import annotations

import argparse

from common import run_params

from lofit.cli import judge
from lofit.evaluation.judge import JudgeConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", required=True)
    parser.add_argument("--method", choices=["base", "lofit"], required=True)
    args = parser.parse_args()
    run = run_params(args.run)
    settings = dict(run.params["judge"])
    require = settings.pop("require")
    folder = run.dir / "open_ended" / args.method
    judge(str(folder / "answers.jsonl"), str(folder / "judge"), JudgeConfig(**settings), require=require)


if __name__ == "__main__":
    main()

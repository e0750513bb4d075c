"""DVC stage `select_heads@RUN`: LoFiT step 1 on one run's task; writes runs/RUN/select/."""

from __future__ import annotations

import argparse
import shutil

from common import run_params

from lofit.cli import select
from lofit.training.config import SelectionConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", required=True)
    run = run_params(parser.parse_args().run)
    out = run.dir / "select"
    shutil.rmtree(out, ignore_errors=True)  # a stage output starts clean (no stale checkpoints)
    settings = run.run["select"]
    select(
        task=run.task(),
        selection=SelectionConfig(lr=settings["lr"], l1_lambda=settings["l1_lambda"], seed=run.params["seed"]),
        backbone=run.backbone(),
        data=run.data(),
        trainer=run.trainer("select"),
        output_dir=str(out),
    )


if __name__ == "__main__":
    main()

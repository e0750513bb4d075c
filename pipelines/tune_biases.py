"""DVC stage `tune_biases@RUN`: LoFiT step 2 on the top-K heads of step 1; writes runs/RUN/tune/."""

from __future__ import annotations

import argparse
import shutil

from common import run_params

from lofit.cli import tune
from lofit.training.config import TuningConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", required=True)
    run = run_params(parser.parse_args().run)
    out = run.dir / "tune"
    shutil.rmtree(out, ignore_errors=True)
    settings = run.run["tune"]
    tune(
        task=run.task(),
        tuning=TuningConfig(
            heads=str(run.dir / "select" / "heads.json"),
            top_k=settings["top_k"],
            lr=settings["lr"],
            seed=run.params["seed"],
        ),
        backbone=run.backbone(),
        data=run.data(),
        trainer=run.trainer("tune"),
        output_dir=str(out),
    )


if __name__ == "__main__":
    main()

"""`logs/metrics.csv` that survives a resume: the new rows continue the old file instead of replacing it.

Lightning's CSVLogger deletes an existing `metrics.csv` (with a warning) when it starts, so a run
resumed from `checkpoints/last.ckpt` would lose the curves of its earlier epochs.
"""

from __future__ import annotations

import csv
from pathlib import Path

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from lofit.io import atomic_open


class _ContinuedWriter(ExperimentWriter):
    """Starts a fresh file, or (`resume`) keeps the rows of the earlier run up to the resumed step."""

    def __init__(self, log_dir: str, resume: bool) -> None:
        self.resume = resume
        self.previous_rows: list[dict[str, str]] | None = None
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        if not self.resume:
            path.unlink()  # a new run replaces the old log (what Lightning does, without its warning)
            return
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            self.previous_rows = list(reader)
            self.metrics_keys = sorted(reader.fieldnames or [])

    def save(self) -> None:
        if self.previous_rows is not None and self.metrics:
            self._rewrite_kept_rows()
        super().save()

    def _rewrite_kept_rows(self) -> None:
        """Keep the earlier rows before the first step logged now (later ones were logged after the
        checkpoint by the interrupted run and are logged again) under the union of old and new columns."""
        first_step = min(int(row["step"]) for row in self.metrics)
        kept = [row for row in self.previous_rows if int(float(row["step"])) < first_step]
        self._record_new_keys()
        with atomic_open(self.metrics_file_path, "w") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(kept)
        self.previous_rows = None


class ContinuedCSVLogger(CSVLogger):
    """CSVLogger into `<save_dir>/logs/metrics.csv` that continues the file when `resume` is set."""

    def __init__(self, save_dir: str | Path, resume: bool) -> None:
        super().__init__(save_dir=save_dir, name="logs", version="")
        self.resume = resume

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuedWriter(self.log_dir, self.resume)
        return self._experiment

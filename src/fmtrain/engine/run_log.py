"""A CSV log that is the whole history of a run, across resumes.

Lightning's `CSVLogger` deletes ``metrics.csv`` when it finds one in its folder, so a resumed
run in the same folder (`fmtrain.engine.run_folder`) would lose everything logged before the
interruption. This one keeps the file and, on the first record after a start, drops the rows
at or past that step: a run resumed from an older checkpoint than its last logged step (a
kill between checkpoints) then has each step once, as if it had never stopped.
"""

from __future__ import annotations

import csv
from typing import Any

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

__all__ = ["RunCSVLogger"]


class _ResumingWriter(ExperimentWriter):
    def __init__(self, log_dir: str) -> None:
        self._trimmed = False
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        pass  # the earlier part of this run's log stays (Lightning's writer deletes it)

    def log_metrics(self, metrics_dict: dict[str, Any], step: int | None = None) -> None:
        if not self._trimmed and step is not None:
            self._trimmed = True
            self._drop_rows_from(step)
        super().log_metrics(metrics_dict, step)

    def _drop_rows_from(self, step: int) -> None:
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            reader = csv.DictReader(file)
            fields, rows = reader.fieldnames or [], list(reader)
        # the columns already there stay the header: the base writer adds new ones to it
        self.metrics_keys = sorted(set(self.metrics_keys) | set(fields))
        kept = [r for r in rows if not r.get("step") or int(float(r["step"])) < step]
        if len(kept) == len(rows):
            return
        with self._fs.open(self.metrics_file_path, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=fields)
            writer.writeheader()
            writer.writerows(kept)


class RunCSVLogger(CSVLogger):
    """`CSVLogger` whose ``metrics.csv`` survives a resume (see the module docstring)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ResumingWriter(log_dir=self.log_dir)
        return self._experiment

"""Loggers that survive a resumed run.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when it starts in a non-empty
directory, so ``vlmrm fit --ckpt_path last`` (which continues in the run's own directory) would
silently throw away every curve logged before the interruption. :class:`CSVLogger` appends
instead. ``vlmrm fit`` swaps it in for Lightning's class; configs may also name it directly.
"""

from __future__ import annotations

import csv

from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

__all__ = ["CSVLogger"]


class _AppendingExperimentWriter(ExperimentWriter):
    """Lightning's writer, but an existing ``metrics.csv`` is kept and appended to."""

    def _check_log_dir_exists(self) -> None:
        # Called by the base __init__ instead of deleting the file: start from the file's own
        # columns, so new rows line up with the old ones (a new column rewrites the header).
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = next(csv.reader(file), [])


class CSVLogger(LightningCSVLogger):
    """:class:`lightning.pytorch.loggers.CSVLogger` that appends to an existing
    ``metrics.csv`` (a resumed run) rather than deleting it. Same arguments."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment

"""Loggers that keep a run's history when the run is resumed into its own directory.

Lightning's CSVLogger deletes an existing ``metrics.csv`` when it starts ("Previous log files
... will be deleted"), so resuming a run erased the epochs before the checkpoint. This one
keeps the file and appends; :class:`attnbench.callbacks.LogHistory` cuts it back to the rows
that the checkpoint had seen (rows logged after it are logged again by the resumed run).
"""

from __future__ import annotations

import csv
import os

from pytorch_lightning.loggers import CSVLogger as LightningCSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:  # Lightning's deletes metrics.csv here
        self.metrics_keys = self._header()

    def _header(self) -> list[str]:
        if not os.path.isfile(self.metrics_file_path):
            return []
        with open(self.metrics_file_path, newline="") as file:
            return next(csv.reader(file), [])

    def rows(self) -> int:
        """Data rows on disk, after flushing what is buffered."""
        self.save()
        if not os.path.isfile(self.metrics_file_path):
            return 0
        with open(self.metrics_file_path, newline="") as file:
            return max(0, sum(1 for _ in csv.reader(file)) - 1)

    def keep_rows(self, count: int) -> None:
        """Cut metrics.csv back to its first ``count`` data rows (0: start afresh)."""
        self.metrics = []
        if not os.path.isfile(self.metrics_file_path):
            return
        with open(self.metrics_file_path, newline="") as file:
            lines = list(csv.reader(file))
        if count == 0:
            os.remove(self.metrics_file_path)
            self.metrics_keys = []
            return
        tmp = self.metrics_file_path + ".tmp"
        with open(tmp, "w", newline="") as file:
            csv.writer(file).writerows(lines[: count + 1])
        os.replace(tmp, self.metrics_file_path)  # never a half-written log
        self.metrics_keys = lines[0]


class CSVLogger(LightningCSVLogger):
    """Lightning's CSVLogger, appending to an existing metrics.csv instead of deleting it."""

    @property
    @rank_zero_experiment
    def experiment(self) -> _AppendingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment

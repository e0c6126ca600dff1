"""A CSV logger that survives resuming into the same run directory.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when it starts
(``lightning.fabric.loggers.csv_logs._ExperimentWriter._check_log_dir_exists``),
so ``ckpt_path=last`` with the same ``hydra.run.dir`` would erase the logs of
everything before the interruption. This one appends instead.
"""

from __future__ import annotations

import csv

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        # Keep the file and learn its columns, so new rows append under the same header.
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                header = next(csv.reader(file), [])
            self.metrics_keys = sorted(header)


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` that appends to an existing ``metrics.csv`` instead of deleting it."""

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None and self._is_global_zero():
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return super().experiment

    def _is_global_zero(self) -> bool:
        from lightning.pytorch.utilities.rank_zero import rank_zero_only

        return getattr(rank_zero_only, "rank", 0) == 0  # set by Lightning at start-up

"""A callback for benchmarks: wall time per training iteration, written to <run dir>/timing_rank{R}.json."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback


class IterationTimer(Callback):
    """Times ``on_train_batch_start`` -> ``on_train_batch_end`` after ``warmup`` batches."""

    def __init__(self, warmup: int = 50) -> None:
        self.warmup = warmup
        self.durations: list[float] = []
        self._start = 0.0
        self._batches = 0

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self._batches += 1
        if self._batches > self.warmup:
            self.durations.append(time.perf_counter() - self._start)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.durations:
            raise ValueError(
                f"{self._batches} iterations ran, none timed after a warm-up of {self.warmup}: "
                "raise train.iterations (or lower callbacks.timer.warmup)"
            )
        report = {
            "median_s": statistics.median(self.durations),
            "mean_s": statistics.fmean(self.durations),
            "iterations_timed": len(self.durations),
        }
        path = Path(trainer.default_root_dir) / f"timing_rank{trainer.global_rank}.json"
        path.write_text(json.dumps(report))

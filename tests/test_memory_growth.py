"""Flat memory over a long run: resident memory does not grow after warm-up."""

from __future__ import annotations

import resource
from typing import Any

import lightning as L
import pytest
from helpers import run, without_evaluation
from lightning.pytorch.callbacks import Callback


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


class MemoryProbe(Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.after_warmup = 0
        self.peak_after = 0

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        rss = resident_bytes()
        if pl_module.iteration == self.warmup:
            self.after_warmup = rss
        elif pl_module.iteration > self.warmup:
            self.peak_after = max(self.peak_after, rss)


@pytest.mark.slow  # a study of 2,000 iterations; test_memory.py checks what a step keeps
def test_resident_memory_grows_less_than_2_percent_over_2000_iterations(make_config) -> None:
    probe = MemoryProbe(warmup=300)
    # Logging every 10 iterations and skips every 100 exercise those paths too.
    skips = ",".join(str(i) for i in range(400, 2300, 100))
    cfg = make_config(
        "experiment=ring",
        "train.iterations=2300",
        "trainer.log_every_n_steps=10",
        f"skip.inject_nonfinite_at=[{skips}]",
    )
    run(without_evaluation(cfg), probe)
    growth = probe.peak_after / probe.after_warmup - 1
    assert growth < 0.02, f"resident memory grew {100 * growth:.2f}% after warm-up"

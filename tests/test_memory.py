"""Memory hygiene: nothing a step builds outlives it."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import lightning as L
import pytest
import torch
from helpers import run, without_evaluation
from lightning.pytorch.callbacks import Callback


class WatchStepTensors(Callback):
    """Keeps weak references to the fake batches a step generated; checks they died."""

    def __init__(self) -> None:
        self.refs: list[weakref.ref] = []
        self.alive_after_step: list[int] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        original = pl_module.generate

        def generate(n: int, keep_graph: bool, labels: torch.Tensor | None = None) -> torch.Tensor:
            fake = original(n, keep_graph, labels)
            self.refs.append(weakref.ref(fake))
            return fake

        pl_module.generate = generate

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # The previous step's on_train_batch_end has run: its tensors must be gone.
        gc.collect()
        self.alive_after_step.append(sum(ref() is not None for ref in self.refs))
        self.refs.clear()


@pytest.mark.parametrize("experiment", ["ring", "wgan_gp"])
def test_fake_batches_and_their_graphs_die_with_the_step(make_config, experiment: str) -> None:
    watcher = WatchStepTensors()
    # Injected skips leave the step through the exception path: it must not leak either.
    overrides = [
        f"experiment={experiment}",
        "train.iterations=6",
        "train.n_critic=2",
        "skip.inject_nonfinite_at=[1,3]",
    ]
    run(without_evaluation(make_config(*overrides)), watcher)
    assert len(watcher.alive_after_step) == 8
    assert watcher.alive_after_step == [0] * 8

"""A progress bar that counts iterations (generator updates), the run's unit of time."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

from gan_template.harness.lightning_internals import progress_bar_due
from gan_template.module import as_gan_module


class IterationProgressBar(TQDMProgressBar):
    """One bar for the whole run, ``iteration / train.iterations``, across epochs.

    Lightning's bar counts batches per epoch; a skipped iteration is a batch
    but not a generator update, and ``global_step`` counts every optimizer
    step, so neither matches ``train.iterations``.
    """

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        module = as_gan_module(pl_module)
        self.train_progress_bar.reset(total=module.max_iterations)
        self.train_progress_bar.initial = module.iteration
        self.train_progress_bar.n = module.iteration
        self.train_progress_bar.set_description("Iterations")

    def get_metrics(
        self, trainer: L.Trainer, pl_module: L.LightningModule
    ) -> dict[str, int | str | float | dict[str, float]]:
        # The module's last logged losses, already numbers: Lightning's own
        # progress-bar metrics would read the device on every batch.
        return {
            **super().get_metrics(trainer, pl_module),
            **as_gan_module(pl_module).progress_metrics,
        }

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        self.train_progress_bar.set_description(f"Iterations (epoch {trainer.current_epoch})")

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        bar = self.train_progress_bar
        iteration = as_gan_module(pl_module).iteration
        if progress_bar_due(self, iteration, bar.total) and not bar.disable:
            bar.n = iteration
            bar.set_postfix(self.get_metrics(trainer, pl_module))
            bar.refresh()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.train_progress_bar.disable:
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))

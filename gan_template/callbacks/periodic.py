"""The schedule shared by evaluations and sample grids: every N iterations, and at the end."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from gan_template.harness.errors import ConfigError
from gan_template.module import GANModule, as_gan_module


def require_noise_input(pl_module: L.LightningModule, what: str) -> None:
    """Refuse, at setup, a module whose generator takes images: ``what`` draws latents."""
    if getattr(pl_module, "GENERATOR_INPUT", "noise") != "noise":
        raise ConfigError(
            f"callbacks: {what} draws latents, and {type(pl_module).__name__} is an "
            "image-to-image task (its generator takes images); use callbacks=translation"
        )


def is_due(iteration: int, every_n_iterations: int, last_done: int) -> bool:
    """Whether a periodic action (evaluation, grid, checkpoint) runs after this iteration."""
    return (
        every_n_iterations > 0
        and iteration > 0
        and iteration % every_n_iterations == 0
        and iteration != last_done
    )


#: The run's one result file, written at its end (``train.write_final_metrics``): the
#: iteration reached and the last evaluation's metrics of every :class:`EveryNIterations`.
FINAL_METRICS = "final_metrics.json"


class EveryNIterations(Callback):
    """Calls :meth:`run` every ``every_n_iterations`` iterations (0: never) and once at the end.

    Iterations are generator updates (the module's ``iteration``), so a skipped
    iteration never triggers a second run at the same count. The final run
    happens inside the last batch. The checkpoint of such an iteration is
    written before the runs (so a run that fails, or a kill during a long
    final evaluation, loses no training) and ``last.ckpt`` again after them,
    with the iteration of the last run: resuming a finished run, or one that
    reached a shorter ``train.iterations``, does not run (and log) the final
    evaluation a second time (``harness/iteration_checkpoint.py``).
    """

    def __init__(self, every_n_iterations: int) -> None:
        if every_n_iterations < 0:
            raise ValueError(
                f"every_n_iterations={every_n_iterations} must be >= 0 (0: only at the end)"
            )
        self.every_n_iterations = every_n_iterations
        self.last_run_iteration = -1
        #: What the last run logged; the run's final_metrics.json gathers these.
        self.last_metrics: dict[str, float] = {}

    def run(self, trainer: L.Trainer, pl_module: GANModule) -> None:
        raise NotImplementedError

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self.due(as_gan_module(pl_module)):
            self._run(trainer, pl_module)

    def due(self, module: GANModule) -> bool:
        """Whether :meth:`run` runs at the end of this batch (periodically, or the final run)."""
        return is_due(module.iteration, self.every_n_iterations, self.last_run_iteration) or (
            module.stop_reason is None  # stopped by a signal: no final run (on_train_end)
            and module.max_iterations is not None
            and module.iteration >= module.max_iterations
            and module.iteration != self.last_run_iteration
        )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        module = as_gan_module(pl_module)
        if module.stop_reason is not None:
            return  # stopped by a signal: the grace period is for saving, not evaluating
        if module.iteration != self.last_run_iteration:
            self._run(trainer, pl_module)

    def state_dict(self) -> dict[str, Any]:
        return {"last_run_iteration": self.last_run_iteration, "last_metrics": self.last_metrics}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_run_iteration = state_dict["last_run_iteration"]
        self.last_metrics = dict(state_dict["last_metrics"])

    def _run(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        module = as_gan_module(pl_module)
        self.last_run_iteration = module.iteration
        self.run(trainer, module)

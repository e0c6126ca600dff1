"""Checkpoints every K iterations (generator updates), plus ``last.ckpt``.

Lightning's ``ModelCheckpoint(every_n_train_steps=K)`` counts ``global_step``,
which in manual optimization is every optimizer step (``n_critic + 1`` per
iteration, and skipped iterations may add some), so "every K steps" would not
mean "every K iterations". This callback counts the module's ``iteration``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from gan_template.callbacks.periodic import EveryNIterations, is_due
from gan_template.harness.checkpoint_io import copy_atomically
from gan_template.harness.skip import TooManySkips
from gan_template.module import GANModule, as_gan_module


class IterationCheckpoint(Callback):
    """Save ``iter{N:07d}.ckpt`` every ``every_n_iterations`` and keep ``last.ckpt`` current.

    Args:
        every_n_iterations: period of the numbered checkpoints; 0 saves only ``last.ckpt``
            (at the end and on a controlled stop).
        dirpath: where to save; default ``<trainer.default_root_dir>/checkpoints``.
        keep_last_n: numbered checkpoints to keep (oldest deleted first); 0 keeps all.
    """

    def __init__(
        self, every_n_iterations: int = 1000, dirpath: str | None = None, keep_last_n: int = 0
    ) -> None:
        if every_n_iterations < 0 or keep_last_n < 0:
            raise ValueError("checkpoint every_n_iterations and keep_last_n must be >= 0")
        self.every_n_iterations = every_n_iterations
        self.dirpath = dirpath
        self.keep_last_n = keep_last_n
        self.last_saved_iteration = -1
        self._saved_before_periodic_runs = -1  # the iteration, until its last.ckpt is rewritten

    def directory(self, trainer: L.Trainer) -> Path:
        return Path(self.dirpath or Path(trainer.default_root_dir) / "checkpoints")

    def last_path(self, trainer: L.Trainer) -> Path:
        return self.directory(trainer) / "last.ckpt"

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:  # temporary files of saves a kill interrupted
            for leftover in self.directory(trainer).glob(".*.ckpt.*.tmp"):
                leftover.unlink(missing_ok=True)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        module = as_gan_module(pl_module)
        if module.iteration == self._saved_before_periodic_runs:
            # Saved before this batch's evaluations and grids ran; last.ckpt again, now
            # holding their records (so a resume does not run them twice).
            self._saved_before_periodic_runs = -1
            trainer.save_checkpoint(self.last_path(trainer), weights_only=False)
        elif (due := self.due(module)) is not None:
            self._save(trainer, module.iteration, numbered=due == "numbered")

    def due(self, module: GANModule) -> str | None:
        """``numbered``, ``last`` or None: what this batch's end saves."""
        iteration = module.iteration
        if is_due(iteration, self.every_n_iterations, self.last_saved_iteration):
            return "numbered"
        if iteration != self.last_saved_iteration and (
            module.stop_reason is not None  # every rank stops after this batch (stopping.py)
            or (module.max_iterations is not None and iteration >= module.max_iterations)
        ):
            # The final checkpoint is written inside the last batch, not in
            # on_train_end: by then Lightning has counted the interrupted epoch as
            # finished, and a resume would start the next epoch instead of
            # continuing this one where the data order left off.
            return "last"
        return None

    def before_periodic_runs(self) -> Callback:
        """A callback to place first: saves a due checkpoint before any evaluation or grid runs.

        An evaluation can fail (a setting only it uses) or be killed (a scheduler's
        SIGKILL during a long final evaluation); the training of the iteration is
        on disk by then. This checkpoint callback itself, placed last, writes
        ``last.ckpt`` again after them.
        """
        return _SaveBeforePeriodicRuns(self)

    def save_before_periodic_runs(self, trainer: L.Trainer, module: GANModule) -> None:
        """Save now if a checkpoint is due and an evaluation or grid runs in this batch."""
        due = self.due(module)
        if due is None:  # most iterations: nothing more to look at
            return
        callbacks = trainer.callbacks  # type: ignore[attr-defined]
        if any(c.due(module) for c in callbacks if isinstance(c, EveryNIterations)):
            self._save(trainer, module.iteration, numbered=due == "numbered")
            self._saved_before_periodic_runs = module.iteration

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        iteration = as_gan_module(pl_module).iteration
        if iteration != self.last_saved_iteration:
            self._save(trainer, iteration, numbered=False)
        rank_zero_info(f"Last checkpoint: {self.last_path(trainer)}")

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        # Save only where every rank is known to be here: a too-many-skips stop is
        # decided identically on all ranks, and Lightning raises SIGTERMException
        # on all ranks together (it broadcasts the signal); Ctrl-C is safe in a
        # single process. Anything else may have hit one rank only, and the
        # save's barrier would hang.
        agreed = isinstance(exception, (TooManySkips, SIGTERMException))
        if agreed or (isinstance(exception, KeyboardInterrupt) and trainer.world_size == 1):
            iteration = as_gan_module(pl_module).iteration
            self._save(trainer, iteration, numbered=False)
            what = (
                "SIGTERM" if isinstance(exception, SIGTERMException) else type(exception).__name__
            )
            rank_zero_info(
                f"{what}: saved a resumable checkpoint at iteration {iteration}. Resume with "
                f"the same overrides plus ckpt_path={self.last_path(trainer)}"
            )

    def _save(self, trainer: L.Trainer, iteration: int, numbered: bool) -> None:
        """Write a checkpoint (atomically: ``checkpoint_io.py``) and prune old numbered ones."""
        self.last_saved_iteration = iteration
        last = self.last_path(trainer)
        if not numbered:
            trainer.save_checkpoint(last, weights_only=False)
            return
        path = self.directory(trainer) / f"iter{iteration:07d}.ckpt"
        trainer.save_checkpoint(path, weights_only=False)
        if trainer.is_global_zero:  # the same file twice: copy rather than serialise again
            copy_atomically(path, last)
            self._prune(path.parent, iteration)

    def _prune(self, directory: Path, iteration: int) -> None:
        """Keep the newest ``keep_last_n`` numbered checkpoints up to ``iteration``.

        Read from the folder, not remembered, so resumes and crashes leak
        nothing. Checkpoints of later iterations (a run resumed from an older
        one) are left alone: they are the user's to keep or delete.
        """
        if not self.keep_last_n:
            return
        numbered = sorted(
            path
            for path in directory.glob("iter*.ckpt")
            if path.stem[4:].isdigit() and int(path.stem[4:]) <= iteration
        )
        for path in numbered[: -self.keep_last_n]:
            path.unlink(missing_ok=True)

    def state_dict(self) -> dict[str, Any]:
        return {"last_saved_iteration": self.last_saved_iteration}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_saved_iteration = state_dict["last_saved_iteration"]


class _SaveBeforePeriodicRuns(Callback):
    """The first half of :class:`IterationCheckpoint`: see ``before_periodic_runs``."""

    def __init__(self, checkpoint: IterationCheckpoint) -> None:
        self.checkpoint = checkpoint

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self.checkpoint.save_before_periodic_runs(trainer, as_gan_module(pl_module))

"""GuardedModule: the LightningModule under every algorithm of this template.

An algorithm (``GANModule``, or a subclass of yours) writes ``training_step``
on three calls of this class::

    diagnose = self.begin_iteration()          schedules, buffers saved, reducer off
    self.update(name, loss, metrics)           one guarded optimizer update, per update
    return self.end_iteration(metrics)         the one host sync: count, or None (a skip)

and gets, for every update, whatever it is: the skip agreed on by every rank
before any step, DDP without ``find_unused_parameters``, clipping after
unscaling, one host read per quiet iteration, iterations as the unit of run
length, logs and LR schedules, stop signals agreed across ranks, and an exact
resume. The networks are held by name (each a submodule of that name), and
each update's optimizer trains the networks ``trains`` names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any, Literal, cast

import lightning as L
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from gan_template.harness.errors import ConfigError
from gan_template.harness.lightning_internals import disable_sigterm_broadcast, precision_scaler
from gan_template.harness.loggers import EpochMeans, as_numbers, log_at_iteration
from gan_template.harness.resume import gather_rng_states, restore_rng_state
from gan_template.harness.skip import SkipRule
from gan_template.harness.stopping import StopSignal
from gan_template.harness.update import Updates
from gan_template.schedule import ScheduledHyperparameters

OptimizerFactory = Callable[[Iterable[nn.Parameter]], Optimizer]
SchedulerFactory = Callable[[Optimizer], LRScheduler]


class GuardedModule(L.LightningModule):
    """Networks and updates by name, each update guarded; the bookkeeping of a run.

    Args:
        networks: the networks by name, each registered as a submodule of that
            name (``self.<name>``, ``<name>.*`` in the state dict).
        optimizers: per update, ``params -> Optimizer`` (Hydra ``_partial_: true``);
            ``lr`` and ``betas`` may hold schedules (``schedule.py``).
        schedulers: per update, an optional ``optimizer -> LRScheduler``, stepped once per iteration.
        trains: per update, the networks its optimizer trains (default: the
            class's ``TRAINS``). A network no update trains is frozen.
        skip: what flags an update and skips its iteration (``skip.py``).
        gradient_clip_norm: clip each update's gradient norm (unscaled units) to this; None: off.
        max_iterations: stop after this many iterations; None: Lightning decides.
        channels_last: keep 4-d weights and image batches in channels-last
            layout, the one GPU tensor cores prefer for convolutions.
        diagnostics: when an algorithm measures what only the logs read
            (``begin_iteration`` returns True on those iterations):
            ``"log_steps"``, on the iterations that write a ``train/*`` row,
            or ``"every_iteration"``, which also puts them in the ``epoch/*`` means.
    """

    #: The updates and the networks each trains, unless ``trains`` says otherwise.
    TRAINS: Mapping[str, Sequence[str]] = {}
    #: Outputs measured only on log steps under ``diagnostics="log_steps"`` (kept out of
    #: the epoch means, which cover every iteration).
    DIAGNOSTICS: frozenset[str] = frozenset()
    #: Outputs the progress bar shows (those present).
    PROGRESS: tuple[str, ...] = ()

    def __init__(
        self,
        networks: Mapping[str, nn.Module],
        optimizers: Mapping[str, OptimizerFactory],
        schedulers: Mapping[str, SchedulerFactory | None] | None = None,
        trains: Mapping[str, Sequence[str]] | None = None,
        skip: SkipRule | None = None,
        gradient_clip_norm: float | None = None,
        max_iterations: int | None = None,
        channels_last: bool = False,
        diagnostics: Literal["log_steps", "every_iteration"] = "log_steps",
    ) -> None:
        super().__init__()
        self.automatic_optimization = False

        # Each network is a submodule under its own name: ``self.generator``, and
        # ``generator.*`` in the state dict.
        self.networks = dict(networks)
        for name, network in self.networks.items():
            self.add_module(name, network)
        self.trains = self._check_updates(trains or self.TRAINS, optimizers, schedulers or {})
        self.updates = Updates(skip or SkipRule(max_consecutive=20), gradient_clip_norm)

        # Numbers that change over the run: set at the start of every iteration. An
        # algorithm binds its parts' schedules too (``hyperparameter_schedules.bind``).
        self.hyperparameter_schedules = schedules = ScheduledHyperparameters()
        self.make_optimizer = {
            name: schedules.optimizer_factory(name, optimizers[name], (schedulers or {}).get(name))
            for name in self.trains
        }
        self.make_scheduler = {name: (schedulers or {}).get(name) for name in self.trains}
        if max_iterations is not None and max_iterations < 1:
            raise ValueError(f"max_iterations={max_iterations}: must be >= 1 (or None)")
        self.max_iterations = max_iterations
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if diagnostics not in ("log_steps", "every_iteration"):
            raise ValueError(
                f"diagnostics={diagnostics!r}: must be 'log_steps' or 'every_iteration'"
            )
        self.diagnostics_every_iteration = diagnostics == "every_iteration"

        # Run state, saved in checkpoints (on_save_checkpoint).
        self.iteration = 0  # iterations completed: the run's unit of time

        # A SIGTERM is noted, then agreed on by every rank, then stops the run (stopping.py).
        self.stop_signal = StopSignal()
        #: Set when every rank agreed to stop early (the signal's name): the run saves and ends.
        self.stop_reason: str | None = None

        # Epoch aggregates as running means, never as a list of step outputs.
        self.epoch_means = EpochMeans()
        self._optimizer: dict[str, LightningOptimizer] = {}  # by update, set by on_train_start
        # The last logged values, as numbers, for the progress bar.
        self.progress_metrics: dict[str, float] = {}
        self._keeps_epoch_means = True  # set by on_train_start: False without loggers
        # Outputs an iteration carries only now and then (lazy regularisers): a train/*
        # row shows the last one (``lazy_outputs``, set by the algorithm).
        self.lazy_outputs: tuple[str, ...] = ()
        self._last_lazy: dict[str, Tensor] = {}
        # Whether a checkpoint gave every rank its own random stream back (on_load_checkpoint).
        self._streams_restored = False

    # ---- what every algorithm's training_step calls: begin, update, end ----------------------

    def begin_iteration(self) -> bool:
        """Start an iteration; returns whether its updates measure the logs' diagnostics.

        Scheduled hyperparameters follow the iteration (after a resume too,
        whatever the checkpoint's param groups hold); the running buffers are
        saved, to be restored if the iteration is skipped.
        """
        self.hyperparameter_schedules.apply(self.iteration)
        self.updates.begin_iteration(self.iteration)
        # The logs read the last update's diagnostics, on the iterations that log.
        return self.diagnostics_every_iteration or self._logs_at(self.iteration + 1)

    def update(
        self, name: str, loss: Tensor, metrics: Mapping[str, Tensor], measure_norm: bool = True
    ) -> Tensor | None:
        """One guarded update of the optimizer of update ``name`` (``optim.<name>``).

        Flags the loss (non-finite? the skip predicate, which reads ``metrics``),
        backward, averages the gradients over ranks with the flags riding along,
        clips, and steps unless this iteration is flagged on any rank
        (``update.py``). Returns the gradient norm when ``measure_norm`` asks
        for it (or clipping measured it), else None. Every update of an
        algorithm goes through here: the skip agreement, DDP and the host-sync
        budget then hold for it.
        """
        return self.updates.apply(self._optimizer[name], loss, metrics, measure_norm)

    def end_iteration(self, metrics: dict[str, Tensor]) -> dict[str, Tensor] | None:
        """End the iteration: ``metrics``, or None if any rank flagged an update (a skip).

        Reads the flags on the host (the iteration's one sync), agrees on a stop
        signal, and on success counts the iteration, updates the EMA and steps
        the LR schedulers.
        """
        skipped = self.updates.end_iteration() is not None  # the iteration's one host sync
        if self.updates.stop_agreed:  # a rank got a stop signal: all stop after this iteration
            self.stop_reason = self.stop_signal.agreed(self.updates.stop_notes)
        if skipped:
            return None
        self._advance()
        return metrics

    def _advance(self) -> None:
        """Count the completed iteration, let the algorithm follow, step the LR schedules.

        This happens in ``training_step``, not in ``on_train_batch_end``:
        Lightning calls the callbacks' ``on_train_batch_end`` (checkpointing
        among them) *before* the module's, so anything a checkpoint must contain
        has to be final when ``training_step`` returns.
        """
        self.iteration += 1
        self.iteration_completed()
        for scheduler in self._lr_schedulers():
            scheduler.step()

    def iteration_completed(self) -> None:
        """The algorithm's own run state after an iteration that was not skipped (an EMA)."""

    def running_state_parts(self) -> list[nn.Module]:
        """Modules besides the networks whose buffers a skip must restore (LeCam's averages)."""
        return []

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        # Lightning calls this inside optimizer.step(), after unscaling 16-mixed gradients:
        # the guarded update's checks run here (update.StepInHand says why).
        self.updates.before_step(optimizer)

    def _lr_schedulers(self) -> list[Any]:
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return []
        return schedulers if isinstance(schedulers, list) else [schedulers]

    # ---- bookkeeping ---------------------------------------------------------------------

    def configure_model(self) -> None:
        if self.memory_format is torch.channels_last:
            self.to(memory_format=torch.channels_last)  # 4-d parameters only; moves keep it

    def on_train_start(self) -> None:
        trainer = self.trainer
        self.stop_signal.rank = trainer.global_rank
        if self.stop_signal.install():  # replaces Lightning's handler (stopping.py says why)
            disable_sigterm_broadcast(trainer)
        # Epoch means that no logger would write are not kept.
        self._keeps_epoch_means = bool(trainer.loggers)
        optimizers = self.optimizers()  # Lightning returns a lone optimizer unlisted
        listed = optimizers if isinstance(optimizers, list) else [optimizers]
        self._optimizer = dict(zip(self.trains, listed, strict=True))
        self.updates.prepare(
            optimizers=[opt.optimizer for opt in self._optimizer.values()],
            buffers=self._running_state(),
            backward=self.manual_backward,
            wrapped_model=trainer.model,
            world_size=trainer.world_size,
            rank=trainer.global_rank,
            scaler=precision_scaler(trainer),
            stop_note=self.stop_signal.note,
        )
        if trainer.ckpt_path is not None:
            self._apply_configured_learning_rates()
        if trainer.world_size > 1 and not self._streams_restored:
            draw_noise_per_rank(trainer.global_rank)  # a fresh run, or fewer saved streams
        if self.max_iterations is not None and self.iteration >= self.max_iterations:
            trainer.should_stop = True

    def _running_state(self) -> list[Tensor]:
        """The buffers a skipped iteration must leave as they were (saved before every iteration).

        BatchNorm statistics, and the state of stateful parts (LeCam's averages,
        ADA's p); not constants such as R3GAN's resampling filters, which are
        non-persistent buffers (they are in no state dict).
        """
        parts = [*self.networks.values(), *self.running_state_parts()]
        return [
            tensor
            for part in parts
            for tensor in part.state_dict(keep_vars=True).values()
            if not isinstance(tensor, nn.Parameter) and torch.is_tensor(tensor)
        ]

    def _apply_configured_learning_rates(self) -> None:
        """After a resume, use the configured learning rates, not the checkpoint's.

        Lightning restores each optimizer's param groups, ``lr`` included, so a
        changed ``optim.*.lr`` would otherwise be silently ignored. A scheduled
        rate keeps its progress: it is rescaled by new / old base rate.
        """
        schedulers = self._lr_schedulers()
        for name, lightning_optimizer in self._optimizer.items():
            optimizer = lightning_optimizer.optimizer
            lr = getattr(self.make_optimizer[name], "keywords", {}).get("lr")
            if lr is None or self.hyperparameter_schedules.schedules_learning_rate(name):
                continue
            for group in optimizer.param_groups:
                old = group.get("initial_lr", group["lr"])
                if old == lr:
                    continue
                group["lr"] *= lr / old
                if "initial_lr" in group:
                    group["initial_lr"] = lr
                rank_zero_info(
                    f"resume: optim.{name}.lr={lr} replaces the checkpoint's {old} "
                    f"(the optimizer's rate is now {group['lr']:g})"
                )
            for scheduler in schedulers:
                if scheduler.optimizer is optimizer:
                    scheduler.base_lrs = [lr for _ in scheduler.base_lrs]

    def on_train_batch_end(self, outputs: STEP_OUTPUT, batch: Any, batch_idx: int) -> None:
        skipped = self.updates.last_reason is not None
        # Lightning turns a None return into {} in manual optimization.
        assert skipped == (not outputs), "training_step returns None exactly when it skips"
        if not skipped:
            metrics = cast(Mapping[str, Tensor], outputs)
            logs = self._logs_at(self.iteration)
            if self._keeps_epoch_means:
                # Epoch means cover every iteration: not the diagnostics of log steps alone.
                every = self.diagnostics_every_iteration
                self.epoch_means.update(
                    metrics if every or not logs else self._per_iteration(metrics)
                )
            if self.lazy_outputs:
                self._last_lazy.update(
                    (name, value)
                    for name, value in metrics.items()
                    if name.startswith(self.lazy_outputs)
                )
            if logs:
                self._log_iteration({**self._last_lazy, **metrics})
        self.skip_rule.stop_if_limit_reached(self.iteration)
        if self.stop_reason is not None or (
            self.max_iterations is not None and self.iteration >= self.max_iterations
        ):
            self.trainer.should_stop = True

    def on_train_end(self) -> None:
        self.stop_signal.uninstall()

    def on_train_epoch_end(self) -> None:
        # Every rank calls this (the means are averaged over ranks).
        means = self.epoch_means.compute(partial(self.trainer.strategy.reduce, reduce_op="mean"))
        if means:
            numbers = as_numbers({f"epoch/{name}": value for name, value in means.items()})
            log_at_iteration(self.loggers, numbers, self.iteration)
        self.epoch_means.reset()

    def _logs_at(self, iteration: int) -> bool:
        """Whether the iteration that ends with ``iteration`` done writes a ``train/*`` row."""
        every = self.trainer.log_every_n_steps  # type: ignore[attr-defined]  # set by Lightning
        return every > 0 and (iteration % every == 0 or iteration == self.max_iterations)

    #: What ``diagnostics="log_steps"`` measures on log steps only.
    def _per_iteration(self, metrics: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {name: value for name, value in metrics.items() if name not in self.DIAGNOSTICS}

    def _log_iteration(self, outputs: Mapping[str, Tensor]) -> None:
        """Write one row of ``train/*`` metrics at ``step = iteration``.

        The values become numbers here, in one host read for all of them, and
        only every ``log_every_n_steps`` iterations. Not through ``self.log``:
        Lightning converts every value ever logged with ``prog_bar=True`` to a
        number again at the end of *every* batch (a host sync each), and it
        re-writes stale on-step values after a skipped iteration. The progress
        bar reads ``progress_metrics`` instead.
        """
        metrics = as_numbers({f"train/{name}": value for name, value in outputs.items()})
        metrics["train/skipped"] = self.skip_rule.total
        for reason, count in self.skip_rule.counts.items():
            metrics[f"train/skipped_{reason}"] = count
        for name, value in self.hyperparameter_schedules.values.items():
            metrics[f"train/hp/{name}"] = value
        log_at_iteration(self.loggers, metrics, self.iteration)
        self.progress_metrics = {
            name: metrics[f"train/{name}"] for name in self.PROGRESS if f"train/{name}" in metrics
        }

    # ---- optimizers and checkpoints --------------------------------------------------------------

    def configure_optimizers(self) -> Any:
        """One optimizer per update, over the parameters of the networks it trains (``trains``)."""
        optimizers, schedulers = [], []
        for name, networks in self.trains.items():
            parameters = [p for network in networks for p in self.networks[network].parameters()]
            optimizer = self.make_optimizer[name](parameters)
            self.hyperparameter_schedules.bind_optimizer(name, optimizer)
            optimizers.append(optimizer)
            factory = self.make_scheduler[name]
            if factory is None:
                continue
            schedulers.append(factory(optimizer))
            if isinstance(schedulers[-1], ReduceLROnPlateau):
                raise ConfigError(
                    f"optim.{name}_scheduler: ReduceLROnPlateau steps on a monitored metric, and "
                    "LR schedulers here step once per iteration with none (a GAN's losses do not "
                    "fall as a model improves). Use a schedule of the iteration: "
                    "torch.optim.lr_scheduler.StepLR/CosineAnnealingLR, or optim.<net>.lr as a "
                    "gan_template.schedule"
                )
        return optimizers, schedulers

    def _check_updates(
        self,
        trains: Mapping[str, Sequence[str]],
        optimizers: Mapping[str, Any],
        schedulers: Mapping[str, Any],
    ) -> dict[str, tuple[str, ...]]:
        """``trains`` as tuples, after checking that every name in it and around it exists."""
        checked = {str(name): tuple(map(str, networks)) for name, networks in trains.items()}
        if not checked:
            raise ValueError(f"trains: {type(self).__name__} makes no update; name at least one")
        for name, networks in checked.items():
            unknown = [n for n in networks if n not in self.networks]
            if unknown:
                raise ValueError(
                    f"trains.{name}={list(networks)}: no network named {unknown} (networks: "
                    f"{sorted(self.networks)}); add it under model.<name> or drop it"
                )
            if optimizers.get(name) is None:
                raise ValueError(
                    f"trains.{name}: the update {name!r} has no optimizer; set optim.{name}"
                )
        unused = sorted(set(optimizers) - set(checked)) + sorted(
            name for name, factory in schedulers.items() if factory and name not in checked
        )
        if unused:
            raise ValueError(
                f"optimizers/schedulers {unused}: no update of that name (updates: {sorted(checked)})"
            )
        trained = {n for networks in checked.values() for n in networks}
        for name, network in self.networks.items():
            if name not in trained:  # a pretrained decoder, an encoder used frozen
                network.requires_grad_(False)
        return checked

    def run_state(self) -> dict[str, Any]:
        """The algorithm's own counters for the checkpoint (beside the iteration and skips)."""
        return {}

    def load_run_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`run_state` saved."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["gan_template"] = {
            "iteration": self.iteration,
            "skip": self.skip_rule.state_dict(),
            "rng": gather_rng_states(),  # every rank's, for an exact resume (resume.py)
            **self.run_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["gan_template"]
        self.iteration = state["iteration"]
        self.load_run_state(state)
        self.skip_rule.load_state_dict(state.get("skip") or state["guard"])  # guard: older files
        rng = state.get("rng")
        if rng:
            if len(rng) != self.trainer.world_size:
                rank_zero_warn(
                    f"the checkpoint holds RNG states of {len(rng)} rank(s) but this run has "
                    f"{self.trainer.world_size}: the random stream will not continue exactly"
                )
            restore_rng_state(rng[self.global_rank % len(rng)])
            self._streams_restored = len(rng) == self.trainer.world_size

    @property
    def skip_rule(self) -> SkipRule:
        return self.updates.rule


def draw_noise_per_rank(rank: int) -> None:
    """Give each rank its own torch random stream (a fresh run; a resume restores each rank's,
    unless the checkpoint holds fewer streams than there are ranks).

    Every process seeds the same (``seed_everything(cfg.seed)``), so without this
    every rank would draw the same latents: the fake half of each update would be
    one batch repeated on all ranks. (StyleGAN2-ADA seeds ``seed * ranks + rank``.)
    Weights stay identical: DDP broadcasts rank 0's at start.
    """
    base = int(torch.randint(2**62, ()))  # the same on every rank: drawn from the shared seed
    torch.manual_seed(base + rank)

"""GANModule: one GAN iteration per ``training_step``, with Lightning's manual optimization.

An iteration (see ``schedule.py``)::

    for each of n_critic real batches:            discriminator phase
        fake = G(z)              (the last one keeps its graph for the G phase)
        loss_D = D-loss(D(real), D(fake.detach())) [+ lazy penalty]
        flag it (non-finite? predicate?), backward
        all-reduce grads + flags -> skip on every rank alike, or clip and step D
    loss_G = G-loss(D(fake))                         generator phase
    flag, backward, all-reduce grads + flags -> skip, or clip and step G
    count the iteration (or the skip), update the EMA, step LR schedulers

``training_step`` returns a dict of detached scalars, or ``None`` when the
iteration was skipped: the losses on every iteration; the discriminator's
statistics and the gradient norms, which only feed the logs, on the
iterations that write a ``train/*`` row (``diagnostics``). ``on_train_batch_end`` reads what the step left: it
logs, keeps epoch aggregates, stops after ``skip.max_consecutive`` skips in a
row or at ``max_iterations``. Nothing from the step outlives it: the outputs
are detached scalars and no tensor of the step is kept on the module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
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

from gan_template import models
from gan_template.ema import GeneratorEMA
from gan_template.harness.errors import ConfigError
from gan_template.harness.lightning_internals import disable_sigterm_broadcast, precision_scaler
from gan_template.harness.loggers import EpochMeans, as_numbers, log_at_iteration
from gan_template.harness.resume import gather_rng_states, restore_rng_state
from gan_template.harness.skip import SkipRule
from gan_template.harness.stopping import StopSignal
from gan_template.harness.update import Updates
from gan_template.losses import (
    AdversarialLoss,
    NonSaturating,
    Reported,
    discriminator_statistics,
    split_terms,
)
from gan_template.penalties import DiscriminatorPass, GeneratorPass, Penalty, Regularizer
from gan_template.schedule import ScheduledHyperparameters, StepSchedule


@contextmanager
def frozen(net: nn.Module | Iterable[nn.Parameter]) -> Iterator[None]:
    """Turn off ``requires_grad`` of ``net``'s trainable parameters for the block.

    Gradients still flow *through* ``net`` to earlier layers; its own weight
    gradients are not computed. Parameters the user froze stay frozen. (Lightning's
    ``toggled_optimizer`` does the same for every optimizer's parameters, with a
    dict of all of them built on every call: several times the cost for a
    toy-sized network.)
    """
    params = [
        p for p in (net.parameters() if isinstance(net, nn.Module) else net) if p.requires_grad
    ]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


OptimizerFactory = Callable[[Iterable[nn.Parameter]], Optimizer]
SchedulerFactory = Callable[[Optimizer], LRScheduler]
EMAFactory = Callable[[nn.Module], GeneratorEMA]


class GANModule(L.LightningModule):
    """A GAN trained with alternating discriminator and generator updates.

    ``python -m gan_template`` builds it from the config's ``module:`` node
    (``conf/config.yaml``), whose keys are these arguments, each filled from
    its section of the config.

    Args:
        networks: the networks by name (``model.<name>`` in the config, each a
            submodule of that name): ``generator`` maps ``(batch,
            generator.latent_dim)`` noise to samples, ``discriminator`` samples
            to one logit each; more (an encoder, a second discriminator) for a
            subclass's algorithm.
        optimizers: per update, ``params -> Optimizer`` (``optim.<update>``,
            Hydra ``_partial_: true``); ``lr`` and ``betas`` may hold schedules
            (``schedule.py``).
        schedulers: per update, an optional ``optimizer -> LRScheduler``, stepped once per iteration.
        trains: per update, the networks its optimizer trains (default: each of
            ``generator`` and ``discriminator`` its own). A network no update
            trains is frozen.
        loss: the adversarial loss (``losses.py``); None: non-saturating.
        penalty: the discriminator's regulariser (``penalties.py``) or None; its
            ``interval`` sets lazy regularisation. Logged as ``d_penalty``.
        regularizers: more regularisers by name, of either update (each names
            its ``update``: "discriminator" or "generator"), each with its own
            weight and interval: ``{"path_length": PathLength()}``. Logged as
            ``d_reg/<name>`` or ``g_reg/<name>``.
        augment: applied to real and generated images before every discriminator
            call (``augment.py``: DiffAugment); None: no augmentation.
        skip: what flags an update and skips its iteration (``skip.py``).
        ema: ``generator -> GeneratorEMA`` (``ema.py``); None disables the EMA.
        n_critic: discriminator updates per generator update (``schedule.py``).
        gradient_clip_norm: clip each update's gradient norm (unscaled units) to this; None: off.
        max_iterations: stop after this many generator updates; None: Lightning decides.
        compile_networks: ``torch.compile`` the generator and discriminator (the
            networks, not ``training_step``: compiling a step that toggles
            optimizers fails in Lightning 2.6, #21513).
        channels_last: keep 4-d weights and image batches in channels-last
            layout, the one GPU tensor cores prefer for convolutions.
        diagnostics: when the step measures what only the logs read (D's mean
            logits and accuracies, ``d_grad_norm``, ``g_grad_norm``):
            ``"log_steps"``, on the iterations that write a ``train/*`` row,
            or ``"every_iteration"``, which puts them in every step's outputs
            and in the ``epoch/*`` means. A skip predicate sees D's
            statistics on every update either way.

    Any number a part keeps as a :class:`~gan_template.schedule.Schedule` (the
    penalty's weight, the EMA's decay, an optimizer's lr, ...) is set to its
    value before every iteration and logged as ``train/hp/<part>.<name>``.
    """

    generator: nn.Module
    discriminator: nn.Module

    def __init__(
        self,
        networks: Mapping[str, nn.Module],
        optimizers: Mapping[str, OptimizerFactory],
        schedulers: Mapping[str, SchedulerFactory | None] | None = None,
        trains: Mapping[str, Sequence[str]] | None = None,
        loss: AdversarialLoss | None = None,
        penalty: Penalty | None = None,
        regularizers: Mapping[str, Regularizer] | None = None,
        augment: Callable[[Tensor], Tensor] | None = None,
        skip: SkipRule | None = None,
        ema: EMAFactory | None = GeneratorEMA,
        n_critic: int = 1,
        gradient_clip_norm: float | None = None,
        max_iterations: int | None = None,
        compile_networks: bool = False,
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
        generator = self.generator
        self.latent_dim = models.latent_dim(generator)
        self.num_classes = models.num_classes(generator)
        self.generator_ema = ema(generator) if ema is not None else None
        self.adversarial_loss = loss if loss is not None else NonSaturating()
        self.penalty = penalty
        # A regulariser set to null (regularizers.lecam=null) is off.
        self.regularizers = {n: r for n, r in (regularizers or {}).items() if r is not None}
        # Stateful regularisers (path length's running mean) are submodules: saved in
        # checkpoints, moved to the device, restored when an iteration is skipped.
        self.regularizer_state = nn.ModuleDict(
            {name: r for name, r in self.regularizers.items() if isinstance(r, nn.Module)}
        )
        # Each update's regularisers, as (the name its value is logged under, regulariser).
        by_update: dict[str, list[tuple[str, Regularizer]]] = {name: [] for name in self.trains}
        if penalty is not None:
            by_update["discriminator"].append(("d_penalty", penalty))
        for name, regularizer in self.regularizers.items():
            update = getattr(regularizer, "update", None)
            if update not in by_update:
                raise ValueError(
                    f"regularizers.{name}: regularises the update {update!r}, which this module "
                    f"does not make (its updates: {sorted(by_update)}); a regulariser subclasses "
                    "gan_template.penalties.Penalty (the discriminator's update) or "
                    "GeneratorRegularizer (the generator's)"
                )
            prefix = {"discriminator": "d", "generator": "g"}.get(update, update)
            by_update[update].append((f"{prefix}_reg/{name}", regularizer))
        self.regularizers_of = {name: tuple(regs) for name, regs in by_update.items()}
        # A lazy regulariser's value is in the outputs of the iterations that carry it only;
        # a train/* row shows the last one (at interval 16 and a row every 50 iterations,
        # the iteration a row is written never carries it).
        self._lazy_names = tuple(
            key for regs in self.regularizers_of.values() for key, r in regs if r.interval > 1
        )
        self._last_lazy: dict[str, Tensor] = {}
        self.schedule = StepSchedule(n_critic)
        self.augment = augment
        # Adaptive augmentation (augment.AdaptiveAugment) tunes itself from D(real).
        self._augment_observes = callable(getattr(augment, "observe", None))
        self.updates = Updates(skip or SkipRule(max_consecutive=20), gradient_clip_norm)
        self._predicate_reads_statistics = self.updates.rule.predicate is not None

        # Numbers that change over the run: set at the start of every iteration.
        self.hyperparameter_schedules = schedules = ScheduledHyperparameters()
        parts: dict[str, object] = {
            "loss": loss,
            "penalty": penalty,
            "augment": augment,
            "ema": self.generator_ema,
        }
        parts |= {f"regularizers.{name}": r for name, r in self.regularizers.items()}
        for name, part in parts.items():
            schedules.bind(name, part)
        self.make_optimizer = {
            name: schedules.optimizer_factory(name, optimizers[name], (schedulers or {}).get(name))
            for name in self.trains
        }
        self.make_scheduler = {name: (schedulers or {}).get(name) for name in self.trains}
        self.configured_learning_rates = {
            name: getattr(optimizers[name], "keywords", {}).get("lr") for name in self.trains
        }
        if max_iterations is not None and max_iterations < 1:
            raise ValueError(f"max_iterations={max_iterations}: must be >= 1 (or None)")
        self.max_iterations = max_iterations
        self.compile_networks = compile_networks
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if diagnostics not in ("log_steps", "every_iteration"):
            raise ValueError(
                f"diagnostics={diagnostics!r}: must be 'log_steps' or 'every_iteration'"
            )
        self.diagnostics_every_iteration = diagnostics == "every_iteration"

        # Run state, saved in checkpoints (on_save_checkpoint).
        self.iteration = 0  # generator updates so far: the run's unit of time
        self.discriminator_updates = 0  # drives the lazy penalty schedule

        # A SIGTERM is noted, then agreed on by every rank, then stops the run (stopping.py).
        self.stop_signal = StopSignal()
        #: Set when every rank agreed to stop early (the signal's name): the run saves and ends.
        self.stop_reason: str | None = None

        # Epoch aggregates as running means, never as a list of step outputs.
        self.epoch_means = EpochMeans()
        # Listed once per fit (on_train_start), not walked on every generator update.
        self._discriminator_parameters: list[nn.Parameter] = []
        self._optimizer: dict[str, LightningOptimizer] = {}  # by update, set by on_train_start
        # The last logged losses, as numbers, for the progress bar.
        self.progress_metrics: dict[str, float] = {}
        self._keeps_epoch_means = True  # set by on_train_start: False without loggers

    # ---- the algorithm ---------------------------------------------------------------------

    def training_step(self, batch: Any, batch_idx: int) -> STEP_OUTPUT:
        real, labels = self.unpack(batch)
        diagnose = self.begin_iteration()
        *earlier, (real_last, labels_last) = self.critic_batches(real, labels)
        metrics: dict[str, Tensor] = {}
        every = self.diagnostics_every_iteration
        for k, (real_k, labels_k) in enumerate(earlier):
            fake = self.generate(real_k.shape[0], keep_graph=False, labels=labels_k)
            metrics |= self.discriminator_step(real_k, fake, labels_k, k, every)
        # The last critic update's fake batch is reused by the generator update,
        # so it is the only one generated with a graph.
        fake = self.generate(real_last.shape[0], keep_graph=True, labels=labels_last)
        metrics |= self.discriminator_step(
            real_last, fake.detach(), labels_last, len(earlier), diagnose
        )
        metrics |= self.generator_step(fake, labels_last, real_last, diagnose)
        return self.end_iteration(metrics)

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

    def due_regularizers(self, update: str, count: int) -> tuple[tuple[str, Regularizer], ...]:
        """The regularisers of ``update`` due on its ``count``-th (0-based) update: lazy ones
        on every ``interval``-th, as ``(the name it is logged under, regulariser)``."""
        return tuple((key, r) for key, r in self.regularizers_of[update] if count % r.interval == 0)

    def _advance(self) -> None:
        """Count the completed iteration; update the EMA and the LR schedules.

        This happens in ``training_step``, not in ``on_train_batch_end``:
        Lightning calls the callbacks' ``on_train_batch_end`` (checkpointing
        among them) *before* the module's, so anything a checkpoint must contain
        has to be final when ``training_step`` returns.
        """
        self.iteration += 1
        self.discriminator_updates += self.schedule.n_critic
        if self.generator_ema is not None:
            self.generator_ema.update(self.generator, self.iteration)
        for scheduler in self._lr_schedulers():
            scheduler.step()

    def discriminator_step(
        self,
        real: Tensor,
        fake: Tensor,
        labels: Tensor | None,
        k: int,
        diagnose: bool = True,
    ) -> dict[str, Tensor]:
        """The ``k``-th discriminator update of the iteration; ``diagnose``: with statistics and norm.

        No parameters need freezing: ``fake`` is detached, so the generator is
        not in this graph. A penalty due on this update reads the same forward
        pass (``penalties.DiscriminatorPass``); R1 and R2 differentiate its
        logits with respect to the images before augmentation.
        """
        update = self.discriminator_updates + k
        due = self.due_regularizers("discriminator", update)
        if any(r.input_gradients for _, r in due):
            real, fake = real.detach().requires_grad_(True), fake.detach().requires_grad_(True)
        real_logits = self.judge(real, labels)
        fake_logits = self.judge(fake, labels)
        metrics: dict[str, Tensor] = {}
        loss = reported(
            metrics, "d_loss", self.adversarial_loss.discriminator_loss(real_logits, fake_logits)
        )
        if diagnose or self._predicate_reads_statistics:
            metrics |= discriminator_statistics(real_logits, fake_logits)
        if self._augment_observes:  # adaptive augmentation reads D's verdicts on real images
            metrics |= self.augment.observe(  # type: ignore[union-attr]
                real_logits.detach(), update
            )
        total = loss
        if due:
            judge = partial(self.judge, labels=labels)
            outputs = DiscriminatorPass(judge, real, fake, real_logits, fake_logits)
            for key, regularizer in due:  # logged weighted, before the lazy scale
                total = total + regularizer.interval * reported(metrics, key, regularizer(outputs))
        norm = self.update("discriminator", total, metrics, measure_norm=diagnose)
        if norm is not None:
            metrics["d_grad_norm"] = norm
        return {name: value.detach() for name, value in metrics.items()}

    def generator_step(
        self,
        fake: Tensor,
        labels: Tensor | None,
        real: Tensor,
        diagnose: bool = True,
    ) -> dict[str, Tensor]:
        """One generator update through the (just updated) discriminator, which stays frozen.

        ``real`` is read only by relativistic losses, which pair D(fake) with D(real).
        """
        real_logits = None
        if self.adversarial_loss.pairs_real_and_fake:
            with torch.no_grad():
                real_logits = self.judge(real, labels)
        with frozen(self._discriminator_parameters):  # backward computes no D weight gradients
            fake_logits = self.judge(fake, labels)
            metrics: dict[str, Tensor] = {}
            loss = reported(
                metrics, "g_loss", self.adversarial_loss.generator_loss(fake_logits, real_logits)
            )
            due = self.due_regularizers("generator", self.iteration)
            if due:
                outputs = GeneratorPass(
                    self._generate, self.sample_latent, fake, fake_logits, labels
                )
                for key, regularizer in due:  # logged weighted, before the lazy scale
                    loss = loss + regularizer.interval * reported(
                        metrics, key, regularizer(outputs)
                    )
            norm = self.update("generator", loss, metrics, measure_norm=diagnose)
            if norm is not None:
                metrics["g_grad_norm"] = norm
        return {name: value.detach() for name, value in metrics.items()}

    # ---- helpers the algorithm reads through -------------------------------------------------

    @property
    def batches_per_iteration(self) -> int:
        """Real batches each training step receives: one per discriminator update (``n_critic``).

        The harness sets the data module's ``batches_per_iteration`` from it; an algorithm
        with another schedule overrides it.
        """
        return self.schedule.n_critic

    @property
    def conditional(self) -> bool:
        """Whether the networks take class labels (``num_classes > 0`` on the generator)."""
        return self.num_classes > 0

    def unpack(self, batch: Any) -> tuple[Tensor, Tensor | None]:
        """``(real, labels)``; labels only when the networks are class-conditional."""
        real, labels = (batch[0], batch[1:2]) if isinstance(batch, (list, tuple)) else (batch, ())
        if self.conditional and not labels:
            raise ValueError("the networks are class-conditional but the data has no labels")
        if real.dim() == 4:
            real = real.contiguous(memory_format=self.memory_format)  # no copy when it already is
        return real, labels[0] if self.conditional else None

    def critic_batches(
        self, real: Tensor, labels: Tensor | None
    ) -> list[tuple[Tensor, Tensor | None]]:
        """The batch split into ``n_critic`` real batches, one per discriminator update."""
        n_critic = self.schedule.n_critic
        label_batches = labels.chunk(n_critic) if labels is not None else [None] * n_critic
        return list(zip(real.chunk(n_critic), label_batches, strict=True))

    def augmented(self, samples: Tensor) -> Tensor:
        """``samples`` as the discriminator sees them: augmented when ``augment`` is set."""
        return samples if self.augment is None else self.augment(samples)

    def judge(self, samples: Tensor, labels: Tensor | None = None) -> Tensor:
        """The discriminator's logits of ``samples`` as an update sees them (augmented)."""
        return self.discriminate(self.augmented(samples), labels)

    def discriminate(self, samples: Tensor, labels: Tensor | None = None) -> Tensor:
        """The discriminator's logits, with labels when it is conditional."""
        return (
            self.discriminator(samples) if labels is None else self.discriminator(samples, labels)
        )

    def sample_latent(self, n: int) -> Tensor:
        return torch.randn(n, self.latent_dim, device=self.device)

    def generate(self, n: int, keep_graph: bool, labels: Tensor | None = None) -> Tensor:
        """``n`` samples from the generator, with or without an autograd graph."""
        with torch.set_grad_enabled(keep_graph):
            return self._generate(self.sample_latent(n), labels)

    def _generate(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.generator(z) if labels is None else self.generator(z, labels)

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        # Lightning calls this inside optimizer.step(), after unscaling 16-mixed gradients.
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
        if not self.compile_networks or getattr(self, "_compiled", False):
            return
        self._compiled = True
        # Gradient penalties differentiate twice; torch.compile does not support
        # double backward, so a network a regulariser differentiates stays eager.
        if not self.regularizers_of["generator"]:
            self.generator.compile()  # in place: parameter names and checkpoints are unchanged
        else:
            rank_zero_warn(
                "train.compile: the generator is not compiled because a generator regulariser "
                "is set (regularizers=[] compiles it)"
            )
        if not self.regularizers_of["discriminator"]:
            self.discriminator.compile()
        else:
            rank_zero_warn(
                "train.compile: the discriminator is not compiled because a penalty is set "
                "(penalty=none compiles it)"
            )

    def on_train_start(self) -> None:
        trainer = self.trainer
        self.stop_signal.rank = trainer.global_rank
        if self.stop_signal.install():  # replaces Lightning's handler (stopping.py says why)
            disable_sigterm_broadcast(trainer)
        self._discriminator_parameters = list(self.discriminator.parameters())
        # Epoch means that no logger would write are not kept.
        self._keeps_epoch_means = bool(trainer.loggers)
        self._optimizer = dict(
            zip(self.trains, cast(list[LightningOptimizer], self.optimizers()), strict=True)
        )
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
        elif trainer.world_size > 1:
            draw_noise_per_rank(trainer.global_rank)
        if self.max_iterations is not None and self.iteration >= self.max_iterations:
            trainer.should_stop = True

    def _running_state(self) -> list[Tensor]:
        """The buffers a skipped iteration must leave as they were (saved before every iteration).

        BatchNorm statistics, and the state of stateful parts (LeCam's averages,
        ADA's p); not constants such as R3GAN's resampling filters, which are
        non-persistent buffers (they are in no state dict).
        """
        parts: list[nn.Module] = list(self.networks.values())
        parts += [
            part
            for part in (self.penalty, self.augment, self.adversarial_loss, self.regularizer_state)
            if isinstance(part, nn.Module)
        ]
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
            lr = self.configured_learning_rates[name]
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
            if self._lazy_names:
                self._last_lazy.update(
                    (name, value)
                    for name, value in metrics.items()
                    if name.startswith(self._lazy_names)
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
    DIAGNOSTICS = frozenset(
        {"d_real", "d_fake", "d_accuracy_real", "d_accuracy_fake", "d_grad_norm", "g_grad_norm"}
    )

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
        self.progress_metrics = {name: metrics[f"train/{name}"] for name in ("d_loss", "g_loss")}

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

    #: The updates of a GAN and the networks each trains, unless ``trains`` says otherwise.
    TRAINS: Mapping[str, Sequence[str]] = {
        "generator": ("generator",),
        "discriminator": ("discriminator",),
    }

    def _check_updates(
        self,
        trains: Mapping[str, Sequence[str]],
        optimizers: Mapping[str, Any],
        schedulers: Mapping[str, Any],
    ) -> dict[str, tuple[str, ...]]:
        """``trains`` as tuples, after checking that every name in it and around it exists."""
        checked = {str(name): tuple(map(str, networks)) for name, networks in trains.items()}
        for name in ("generator", "discriminator"):
            if name not in self.networks:
                raise ValueError(
                    f"networks: {type(self).__name__} needs a network named {name!r} (model.{name})"
                )
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

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["gan_template"] = {
            "iteration": self.iteration,
            "discriminator_updates": self.discriminator_updates,
            "skip": self.skip_rule.state_dict(),
            "num_classes": self.num_classes,
            "rng": gather_rng_states(),  # every rank's, for an exact resume (resume.py)
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["gan_template"]
        self.iteration = state["iteration"]
        self.discriminator_updates = state["discriminator_updates"]
        self.skip_rule.load_state_dict(state.get("skip") or state["guard"])  # guard: older files
        rng = state.get("rng")
        if rng:
            if len(rng) != self.trainer.world_size:
                rank_zero_warn(
                    f"the checkpoint holds RNG states of {len(rng)} rank(s) but this run has "
                    f"{self.trainer.world_size}: the random stream will not continue exactly"
                )
            restore_rng_state(rng[self.global_rank % len(rng)])

    @property
    def skip_rule(self) -> SkipRule:
        return self.updates.rule

    @property
    def sampling_generator(self) -> nn.Module:
        """The network samples and metrics use: the EMA generator where there is one.

        With BatchNorm layers that is a copy with statistics of its own
        (``GeneratorEMA.for_sampling``), made once per EMA update.
        """
        if self.generator_ema is None:
            return self.generator
        return self.generator_ema.for_sampling()


def draw_noise_per_rank(rank: int) -> None:
    """Give each rank its own torch random stream (a fresh run; a resume restores each rank's).

    Every process seeds the same (``seed_everything(cfg.seed)``), so without this
    every rank would draw the same latents: the fake half of each update would be
    one batch repeated on all ranks. (StyleGAN2-ADA seeds ``seed * ranks + rank``.)
    Weights stay identical: DDP broadcasts rank 0's at start.
    """
    base = int(torch.randint(2**62, ()))  # the same on every rank: drawn from the shared seed
    torch.manual_seed(base + rank)


def reported(metrics: dict[str, Tensor], name: str, result: Reported) -> Tensor:
    """The value of what a part returned; it and its terms go into ``metrics`` as ``name[/term]``."""
    value, terms = split_terms(result)
    metrics[name] = value
    for term, tensor in terms.items():
        metrics[f"{name}/{term}"] = tensor
    return value


def as_gan_module(pl_module: L.LightningModule) -> GANModule:
    """``pl_module`` as the GANModule the template's callbacks need (they read its iteration)."""
    if not isinstance(pl_module, GANModule):
        raise TypeError(
            f"the gan_template callbacks work with a GANModule, not {type(pl_module).__name__}"
        )
    return pl_module

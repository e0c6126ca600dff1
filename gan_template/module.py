"""GANModule: the GAN's algorithm, one iteration per ``training_step``.

An iteration (Goodfellow et al., 2014, Algorithm 1, with the updates of today's GANs)::

    for each of n_critic real batches:            discriminator phase
        fake = G(z)              (the last one keeps its graph for the G phase)
        loss_D = D-loss(D(real), D(fake.detach())) [+ lazy regularisers]
        one guarded update of D
    loss_G = G-loss(D(fake)) [+ lazy regularisers]   generator phase
    one guarded update of G
    count the iteration (or the skip), update the EMA

The guarded update, the skip agreement across ranks, the counting, logging,
stop signals and checkpoint state are the harness's
(``harness/guarded_module.py``): this file is the algorithm and its parts.
``training_step`` returns a dict of detached scalars, or ``None`` when the
iteration was skipped: the losses on every iteration; the discriminator's
statistics and the gradient norms, which only feed the logs, on the
iterations that write a ``train/*`` row (``diagnostics``). Nothing from the
step outlives it: the outputs are detached scalars and no tensor of the step
is kept on the module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import Tensor, nn

from gan_template import models
from gan_template.ema import GeneratorEMA
from gan_template.harness.guarded_module import GuardedModule, OptimizerFactory, SchedulerFactory
from gan_template.harness.skip import SkipRule
from gan_template.losses import (
    AdversarialLoss,
    NonSaturating,
    Reported,
    discriminator_statistics,
    split_terms,
)
from gan_template.penalties import DiscriminatorPass, GeneratorPass, Penalty, Regularizer
from gan_template.schedule import StepSchedule


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


EMAFactory = Callable[[nn.Module], GeneratorEMA]


class GANModule(GuardedModule):
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
        skip: what flags an update and skips its iteration (``harness/skip.py``).
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

    #: A GAN's two updates, each training its own network (``module.trains`` may say otherwise).
    TRAINS: Mapping[str, Sequence[str]] = {
        "generator": ("generator",),
        "discriminator": ("discriminator",),
    }
    #: What ``diagnostics="log_steps"`` measures on log steps only.
    DIAGNOSTICS = frozenset(
        {"d_real", "d_fake", "d_accuracy_real", "d_accuracy_fake", "d_grad_norm", "g_grad_norm"}
    )
    PROGRESS: tuple[str, ...] = ("d_loss", "g_loss")
    #: What the generator takes: ``"noise"`` (latent vectors; the samplers, grids and image
    #: metrics draw them) or ``"image"`` (the image-to-image tasks of ``gan_template/tasks/``).
    GENERATOR_INPUT = "noise"

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
        super().__init__(
            networks,
            optimizers,
            schedulers,
            trains,
            skip=skip,
            gradient_clip_norm=gradient_clip_norm,
            max_iterations=max_iterations,
            channels_last=channels_last,
            diagnostics=diagnostics,
        )
        for name in ("generator", "discriminator"):
            if name not in self.networks:
                raise ValueError(
                    f"networks: {type(self).__name__} needs a network named {name!r} (model.{name})"
                )
        generator = self.generator
        self.latent_dim = models.latent_dim(generator) if self.GENERATOR_INPUT == "noise" else 0
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
        self.lazy_outputs = tuple(
            key for regs in self.regularizers_of.values() for key, r in regs if r.interval > 1
        )
        self.schedule = StepSchedule(n_critic)
        self.augment = augment
        # Adaptive augmentation (augment.AdaptiveAugment) tunes itself from D(real).
        self._augment_observes = callable(getattr(augment, "observe", None))
        self._predicate_reads_statistics = self.updates.rule.predicate is not None
        self.compile_networks = compile_networks
        #: A frozen decoder of the samples (a GAN in an autoencoder's latent space), or None.
        self.sample_decoder: nn.Module | None = None

        # Numbers that change over the run: set at the start of every iteration.
        parts: dict[str, object] = {
            "loss": loss,
            "penalty": penalty,
            "augment": augment,
            "ema": self.generator_ema,
        }
        parts |= {f"regularizers.{name}": r for name, r in self.regularizers.items()}
        for name, part in parts.items():
            self.hyperparameter_schedules.bind(name, part)

        # Run state, saved in checkpoints (run_state).
        self.discriminator_updates = 0  # drives the lazy regularisers of D
        # Listed once per fit (on_train_start), not walked on every generator update.
        self._discriminator_parameters: list[nn.Parameter] = []

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

    def due_regularizers(self, update: str, count: int) -> tuple[tuple[str, Regularizer], ...]:
        """The regularisers of ``update`` due on its ``count``-th (0-based) update: lazy ones
        on every ``interval``-th, as ``(the name it is logged under, regulariser)``."""
        return tuple((key, r) for key, r in self.regularizers_of[update] if count % r.interval == 0)

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

    def iteration_completed(self) -> None:
        self.discriminator_updates += self.schedule.n_critic
        if self.generator_ema is not None:
            self.generator_ema.update(self.generator, self.iteration)

    # ---- helpers the algorithm reads through -------------------------------------------------

    @property
    def batches_per_iteration(self) -> int:
        """Real batches each training step receives: one per discriminator update (``n_critic``).

        The harness sets the data module's ``batches_per_iteration`` from it; an algorithm
        with another schedule overrides it.
        """
        return self.schedule.n_critic

    def data_shapes(self) -> dict[str, tuple[int, ...]]:
        """What the networks need of the data: ``{attribute of the data module: shape}``,
        checked at start-up (``harness/train.py``)."""
        return {"sample_shape": models.sample_shape(self.generator)}

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

    # ---- bookkeeping ---------------------------------------------------------------------

    def configure_model(self) -> None:
        super().configure_model()
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
        self._discriminator_parameters = list(self.discriminator.parameters())
        super().on_train_start()

    def running_state_parts(self) -> list[nn.Module]:
        parts = (self.penalty, self.augment, self.adversarial_loss, self.regularizer_state)
        return [part for part in parts if isinstance(part, nn.Module)]

    def run_state(self) -> dict[str, Any]:
        return {
            "discriminator_updates": self.discriminator_updates,
            "num_classes": self.num_classes,
        }

    def load_run_state(self, state: Mapping[str, Any]) -> None:
        self.discriminator_updates = state["discriminator_updates"]

    def decode_samples_with(self, decoder: nn.Module) -> None:
        """The generator's samples are latents of ``decoder`` (frozen; saved in checkpoints as
        ``sample_decoder.*``): grids, metrics and the sampler see them decoded."""
        # Left in train mode as the networks (Lightning warns of eval-mode modules at the
        # start of fit); the samplers switch to eval mode themselves (models.generate).
        self.sample_decoder = decoder.requires_grad_(False)

    @property
    def sampling_generator(self) -> nn.Module:
        """The network samples and metrics use: the EMA generator where there is one, followed
        by the sample decoder where there is one (``models.Decoded``).

        With BatchNorm layers that is a copy with statistics of its own
        (``GeneratorEMA.for_sampling``), made once per EMA update.
        """
        generator = (
            self.generator if self.generator_ema is None else self.generator_ema.for_sampling()
        )
        if self.sample_decoder is None:
            return generator
        return models.Decoded(generator, self.sample_decoder)


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

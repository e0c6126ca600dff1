"""Regularisers of either update: pure functions, and the objects a config selects.

A :class:`Penalty` regularises the discriminator's update (R1, R2, WGAN-GP,
LeCam), a :class:`GeneratorRegularizer` the generator's (StyleGAN2's path
length). ``penalty:`` holds the discriminator's main one (``conf/penalty/``);
``regularizers:`` holds any number more, of either side, by name
(``regularizers=[path_length,lecam]``, ``conf/regularizers/``). Each has its
``weight`` (a number or a schedule) and its ``interval`` (lazy regularisation);
the update whose class it names (``update``) adds it to its loss. One of your
own subclasses either base, in your package if you like (``docs/extending.md``).

The gradient penalties differentiate the discriminator's output with respect to its
input with ``create_graph=True`` so the penalty itself can be back-propagated
into the discriminator's weights.

R1 and R2 reuse the discriminator update's own forward pass (R3GAN's
``Trainer.py`` does the same): the module makes the images require gradients
before augmenting and judging them, so the gradient is taken with respect to
the images *before* augmentation, through it, as in R3GAN and StyleGAN2-ADA,
and no second forward pass is needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from gan_template.harness.running_state import Float32Buffers
from gan_template.losses import Reported
from gan_template.schedule import Schedule, check_range, current


def _input_gradient(discriminator: Callable[..., Tensor], inputs: Tensor, *args: Tensor) -> Tensor:
    inputs = inputs.detach().requires_grad_(True)
    outputs = discriminator(inputs, *args)
    (gradient,) = torch.autograd.grad(outputs.sum(), inputs, create_graph=True)
    return gradient.flatten(1)


def gradient_penalty(
    discriminator: Callable[..., Tensor],
    real: Tensor,
    fake: Tensor,
    *args: Tensor,
    generator: torch.Generator | None = None,
) -> Tensor:
    """WGAN-GP: E[(||grad D(x_hat)||_2 - 1)^2], x_hat on lines between real and fake (Gulrajani et al., 2017).

    Args:
        discriminator: the critic (extra ``args``, such as labels, are passed through).
        real: a batch of real samples.
        fake: a batch of generated samples of the same shape (detached here).
        generator: optional RNG for the interpolation weights.
    """
    shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    alpha = torch.rand(shape, device=real.device, dtype=real.dtype, generator=generator)
    interpolated = torch.lerp(real.detach(), fake.detach(), alpha)
    gradient = _input_gradient(discriminator, interpolated, *args)
    return (gradient.norm(2, dim=1) - 1.0).pow(2).mean()


def squared_gradient_norm(logits: Tensor, inputs: Tensor) -> Tensor:
    """E[||d logits / d inputs||_2^2] over the batch, differentiable (``inputs`` must require grad)."""
    (gradient,) = torch.autograd.grad(logits.sum(), inputs, create_graph=True)
    return gradient.flatten(1).pow(2).sum(dim=1).mean()


def r1_penalty(discriminator: Callable[..., Tensor], real: Tensor, *args: Tensor) -> Tensor:
    """R1: E[||grad D(x)||_2^2] on real data (Mescheder et al., 2018).

    StyleGAN2 multiplies this by gamma/2; here the multiplier is the config's
    ``penalty.weight``, so ``weight = gamma / 2``.
    """
    gradient = _input_gradient(discriminator, real, *args)
    return gradient.pow(2).sum(dim=1).mean()


def r2_penalty(discriminator: Callable[..., Tensor], fake: Tensor, *args: Tensor) -> Tensor:
    """R2: E[||grad D(x)||_2^2] on generated samples (Mescheder et al., 2018).

    R3GAN (Huang et al., 2024) uses it together with R1, at the same weight.
    """
    return r1_penalty(discriminator, fake, *args)


@dataclass(frozen=True)
class DiscriminatorPass:
    """One discriminator update's forward pass, as a penalty reads it.

    Attributes:
        discriminator: ``x -> logits`` as the update judges images (augmentation
            and labels included), for penalties that judge images of their own
            (WGAN-GP's interpolates).
        real, fake: the images before augmentation. When the penalty's
            ``input_gradients`` is true they require gradients and the logits
            below are differentiable with respect to them.
        real_logits, fake_logits: the update's logits of ``real`` and ``fake``.
    """

    discriminator: Callable[[Tensor], Tensor]
    real: Tensor
    fake: Tensor
    real_logits: Tensor
    fake_logits: Tensor

    @classmethod
    def of(
        cls, discriminator: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor
    ) -> DiscriminatorPass:
        """Judge ``real`` and ``fake`` afresh (with input gradients): for calling a penalty directly."""
        real = real.detach().requires_grad_(True)
        fake = fake.detach().requires_grad_(True)
        return cls(discriminator, real, fake, discriminator(real), discriminator(fake))


@dataclass(frozen=True)
class GeneratorPass:
    """One generator update's forward pass, as a generator-side regulariser reads it.

    Attributes:
        generate: ``(z, labels) -> samples``, the generator being updated (labels
            are passed only when it is class-conditional).
        sample_latent: ``n -> z``, noise as the module draws it.
        fake: the update's samples (with their graph); ``fake_logits``: D's
            logits of them (D frozen); ``labels``: their labels or None.
    """

    generate: Callable[[Tensor, Tensor | None], Tensor]
    sample_latent: Callable[[int], Tensor]
    fake: Tensor
    fake_logits: Tensor
    labels: Tensor | None


class Regularizer:
    """``weight`` times a value, added to one update's loss on every ``interval``-th of its updates.

    On the updates that carry it the module multiplies it by ``interval`` too
    (lazy regularisation: Karras et al., 2020, appendix B), so its average
    strength does not depend on the interval. ``regularizer(outputs)`` takes
    the update's forward pass (:class:`DiscriminatorPass` or
    :class:`GeneratorPass`) and returns the weighted value, or the value and
    named terms to log (``losses.Reported``). ``weight`` (and any other number
    a subclass keeps) may be a schedule of the iteration
    (``gan_template.schedule``): the module sets it to the schedule's value
    before every iteration. Subclasses implement :meth:`value`; their
    constructors check their own arguments. A regulariser with running state
    keeps it in tensors of an ``nn.Module`` (see :class:`LeCam`): the module then
    saves it in checkpoints and restores it when an iteration is skipped.

    Args:
        weight: the multiplier.
        interval: apply on every ``interval``-th update of its side (StyleGAN2:
            16 for R1, 4 for path length).
    """

    #: The update this regulariser is part of: "discriminator" or "generator".
    update = "discriminator"
    #: Whether :meth:`value` differentiates the discriminator's logits with respect to
    #: the images (the module then makes them require gradients before its forward pass).
    input_gradients = False

    def __init__(self, weight: float | Schedule = 1.0, interval: int = 1) -> None:
        check_range("weight", weight, low=0.0)
        if interval < 1:
            raise ValueError(f"interval={interval}: must be >= 1")
        self.weight = weight
        self.interval = interval

    def value(self, outputs: Any) -> Tensor:
        """The unweighted regulariser."""
        raise NotImplementedError

    def __call__(self, outputs: Any) -> Reported:
        return current(self.weight) * self.value(outputs)

    def __repr__(self) -> str:
        arguments = ", ".join(
            f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and k != "training"
        )
        return f"{type(self).__name__}({arguments})"


class Penalty(Regularizer):
    """A discriminator regulariser; :meth:`value` reads the update's :class:`DiscriminatorPass`.

    Args:
        weight: the multiplier (WGAN-GP's lambda; for R1 and R2, gamma / 2).
        interval: apply on every ``interval``-th discriminator update (StyleGAN2: 16).
    """

    update = "discriminator"

    def value(self, outputs: DiscriminatorPass) -> Tensor:
        raise NotImplementedError


class GeneratorRegularizer(Regularizer):
    """A generator regulariser; :meth:`value` reads the update's :class:`GeneratorPass`."""

    update = "generator"

    def value(self, outputs: GeneratorPass) -> Tensor:
        raise NotImplementedError


class GradientPenalty(Penalty):
    """WGAN-GP (Gulrajani et al., 2017); they use weight 10 on every critic update."""

    def __init__(self, weight: float | Schedule = 10.0, interval: int = 1) -> None:
        super().__init__(weight, interval)

    def value(self, outputs: DiscriminatorPass) -> Tensor:
        return gradient_penalty(outputs.discriminator, outputs.real, outputs.fake)


class R1(Penalty):
    """R1 on real samples; ``weight`` is StyleGAN2's gamma / 2."""

    input_gradients = True

    def value(self, outputs: DiscriminatorPass) -> Tensor:
        return squared_gradient_norm(outputs.real_logits, outputs.real)


class R2(Penalty):
    """R2 on generated samples; ``weight`` is gamma / 2."""

    input_gradients = True

    def value(self, outputs: DiscriminatorPass) -> Tensor:
        return squared_gradient_norm(outputs.fake_logits, outputs.fake)


class R1R2(Penalty):
    """R1 on real plus R2 on generated samples, each with its own weight (R3GAN uses equal ones).

    Args:
        weight: R1's weight (gamma / 2).
        r2_weight: R2's weight; None: the same as ``weight`` (and its schedule).
        interval: as :class:`Penalty`.
    """

    input_gradients = True

    def __init__(
        self,
        weight: float | Schedule = 1.0,
        r2_weight: float | Schedule | None = None,
        interval: int = 1,
    ) -> None:
        super().__init__(weight, interval)
        if r2_weight is not None:
            check_range("r2_weight", r2_weight, low=0.0)
        self.r2_weight = r2_weight

    @staticmethod
    def parts(outputs: DiscriminatorPass) -> tuple[Tensor, Tensor]:
        """R1 and R2, unweighted."""
        return (
            squared_gradient_norm(outputs.real_logits, outputs.real),
            squared_gradient_norm(outputs.fake_logits, outputs.fake),
        )

    def __call__(self, outputs: DiscriminatorPass) -> Reported:
        """The weighted sum, with R1 and R2 (unweighted, as R3GAN logs them) as terms."""
        weight = current(self.weight)
        r2_weight = weight if self.r2_weight is None else current(self.r2_weight)
        r1, r2 = self.parts(outputs)
        return weight * r1 + r2_weight * r2, {"r1": r1.detach(), "r2": r2.detach()}

    def value(self, outputs: DiscriminatorPass) -> Tensor:
        r1, r2 = self.parts(outputs)
        return r1 + r2


class LeCam(Penalty, Float32Buffers):  # Penalty first: its __call__, not nn.Module's
    """LeCam regularisation (Tseng et al., CVPR 2021), for training with little data.

    E[relu(D(x) - a_fake)^2] + E[relu(a_real - D(G(z)))^2], where ``a_real`` and
    ``a_fake`` are exponential moving averages of the discriminator's mean
    output on real and generated images: it keeps the outputs from drifting
    apart, which bounds the LeCam divergence the GAN then minimises. The
    averages are device tensors (no host sync), updated on every discriminator
    update that carries the penalty, saved in checkpoints and restored when an
    iteration is skipped; the first update starts them at its own means.

    Args:
        weight: lambda (Tseng et al.: 0.3 on CIFAR-10 and ImageNet subsets).
        decay: of the moving averages (0.99 in their code).
        interval: as :class:`Penalty` (1: every update, as they use it).
    """

    real_mean: Tensor
    fake_mean: Tensor
    updates: Tensor

    def __init__(
        self, weight: float | Schedule = 0.3, decay: float = 0.99, interval: int = 1
    ) -> None:
        nn.Module.__init__(self)
        Penalty.__init__(self, weight, interval)
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay={decay}: must be in [0, 1)")
        self.decay = decay
        self.register_buffer("real_mean", torch.zeros(()))
        self.register_buffer("fake_mean", torch.zeros(()))
        self.register_buffer("updates", torch.zeros(()))

    @torch.no_grad()
    def _track(self, real_logits: Tensor, fake_logits: Tensor) -> None:
        decay = self.decay * self.updates.clamp(max=1.0)  # 0 on the first update: start there
        self.real_mean.lerp_(real_logits.float().mean(), 1.0 - decay)
        self.fake_mean.lerp_(fake_logits.float().mean(), 1.0 - decay)
        self.updates.add_(1.0)

    def value(self, outputs: DiscriminatorPass) -> Tensor:
        self._track(outputs.real_logits.detach(), outputs.fake_logits.detach())
        real, fake = outputs.real_logits, outputs.fake_logits
        return (real - self.fake_mean).relu().pow(2).mean() + (
            (self.real_mean - fake).relu().pow(2).mean()
        )


class PathLength(GeneratorRegularizer, Float32Buffers):  # its __call__, not nn.Module's
    """StyleGAN2's path-length regularisation (Karras et al., 2020, section 3.2).

    E[(||J^T y||_2 - a)^2], where J is the Jacobian of the generator's output
    with respect to its latent input, y is Gaussian noise scaled by 1/sqrt(pixels
    per channel), and ``a`` a running mean of the lengths: it asks every step
    in latent space to move the image by the same amount. StyleGAN2 takes the
    Jacobian with respect to w, the mapping network's output; the networks here
    have no mapping network, so it is taken with respect to z. It runs on a
    fresh batch of ``batch / batch_shrink`` latents, lazily (every 4th
    generator update, scaled by 4), as in StyleGAN2-ADA's ``Greg`` phase.

    The running mean is a float32 buffer: saved in checkpoints, restored when an
    iteration is skipped, and under DDP moved by the mean length over all ranks
    (one all-reduce of one number on the iterations that carry it), so every
    rank holds the same value and a resume continues it exactly. Its gradient
    through the running mean's update (a 1% term in StyleGAN2-ADA) is dropped.

    Args:
        weight: StyleGAN2's ``pl_weight`` (2).
        interval: generator updates between applications (StyleGAN2: 4).
        decay: of the running mean (StyleGAN2's ``pl_decay``, 0.01).
        batch_shrink: the regularising batch is the update's divided by this (2).
    """

    mean: Tensor

    def __init__(
        self,
        weight: float | Schedule = 2.0,
        interval: int = 4,
        decay: float = 0.01,
        batch_shrink: int = 2,
    ) -> None:
        nn.Module.__init__(self)
        GeneratorRegularizer.__init__(self, weight, interval)
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"decay={decay}: must be in (0, 1]")
        if batch_shrink < 1:
            raise ValueError(f"batch_shrink={batch_shrink}: must be >= 1")
        self.decay, self.batch_shrink = decay, batch_shrink
        self.register_buffer("mean", torch.zeros(()))

    def lengths(self, outputs: GeneratorPass) -> Tensor:
        """||J^T y|| of each sample of a fresh regularising batch (differentiable)."""
        n = max(1, outputs.fake.shape[0] // self.batch_shrink)
        z = outputs.sample_latent(n).requires_grad_(True)
        labels = None if outputs.labels is None else outputs.labels[:n]
        samples = outputs.generate(z, labels)
        pixels = math.prod(samples.shape[2:]) if samples.dim() > 2 else 1
        noise = torch.randn_like(samples) / math.sqrt(pixels)
        (gradient,) = torch.autograd.grad((samples * noise).sum(), z, create_graph=True)
        return gradient.flatten(1).square().sum(dim=1).sqrt()

    def value(self, outputs: GeneratorPass) -> Tensor:
        lengths = self.lengths(outputs)
        batch_mean = lengths.detach().float().mean()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(batch_mean)  # every rank's mean moves alike
            batch_mean /= dist.get_world_size()
        with torch.no_grad():
            self.mean.lerp_(batch_mean, self.decay)
        return (lengths - self.mean.to(lengths.dtype)).square().mean()

    def __call__(self, outputs: GeneratorPass) -> Reported:
        value = current(self.weight) * self.value(outputs)
        return value, {"mean": self.mean.clone()}

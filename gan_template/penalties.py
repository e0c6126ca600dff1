"""Discriminator regularisers: pure functions, and the objects a config selects.

The gradient penalties differentiate the discriminator's output with respect to its
input with ``create_graph=True`` so the penalty itself can be back-propagated
into the discriminator's weights. ``conf/penalty/*.yaml`` names the classes at
the end with ``_target_``; a penalty of your own subclasses :class:`Penalty`.

R1 and R2 reuse the discriminator update's own forward pass (R3GAN's
``Trainer.py`` does the same): the module makes the images require gradients
before augmenting and judging them, so the gradient is taken with respect to
the images *before* augmentation, through it, as in R3GAN and StyleGAN2-ADA,
and no second forward pass is needed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gan_template.running_state import Float32Buffers
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


class Penalty:
    """A discriminator regulariser: ``weight`` times its value, every ``interval``-th D update.

    ``penalty(outputs)`` takes the update's :class:`DiscriminatorPass` and returns
    the weighted value (a scalar) that the update adds to its loss; the module
    multiplies it by ``interval`` on the updates that carry it (lazy
    regularisation, ``schedule.py``). ``weight`` (and any other number a
    subclass keeps) may be given as a schedule of the iteration
    (``gan_template.schedule``): the module sets it to the schedule's value
    before every iteration. Subclasses implement :meth:`value`; their
    constructors check their own arguments. A penalty with running state keeps
    it in tensors of an ``nn.Module`` (see :class:`LeCam`): the module then
    saves it in checkpoints and restores it when an iteration is skipped.

    Args:
        weight: the multiplier (WGAN-GP's lambda; for R1 and R2, gamma / 2).
        interval: apply on every ``interval``-th discriminator update (StyleGAN2: 16).
    """

    #: Whether :meth:`value` differentiates the logits with respect to the images
    #: (the module then makes them require gradients before its forward pass).
    input_gradients = False

    def __init__(self, weight: float | Schedule = 1.0, interval: int = 1) -> None:
        check_range("weight", weight, low=0.0)
        if interval < 1:
            raise ValueError(f"interval={interval}: must be >= 1")
        self.weight = weight
        self.interval = interval

    def value(self, outputs: DiscriminatorPass) -> Tensor:
        """The unweighted penalty."""
        raise NotImplementedError

    def __call__(self, outputs: DiscriminatorPass) -> Tensor:
        return current(self.weight) * self.value(outputs)

    def __repr__(self) -> str:
        arguments = ", ".join(
            f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and k != "training"
        )
        return f"{type(self).__name__}({arguments})"


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
    def terms(outputs: DiscriminatorPass) -> tuple[Tensor, Tensor]:
        """R1 and R2, unweighted."""
        return (
            squared_gradient_norm(outputs.real_logits, outputs.real),
            squared_gradient_norm(outputs.fake_logits, outputs.fake),
        )

    def __call__(self, outputs: DiscriminatorPass) -> Tensor:
        weight = current(self.weight)
        r2_weight = weight if self.r2_weight is None else current(self.r2_weight)
        r1, r2 = self.terms(outputs)
        return weight * r1 + r2_weight * r2

    def value(self, outputs: DiscriminatorPass) -> Tensor:
        r1, r2 = self.terms(outputs)
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

"""Discriminator regularisers: pure functions, and the objects a config selects.

The gradient penalties differentiate the discriminator's output with respect to its
input with ``create_graph=True`` so the penalty itself can be back-propagated
into the discriminator's weights. ``conf/penalty/*.yaml`` names the classes at
the end with ``_target_``; a penalty of your own subclasses :class:`Penalty`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

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


class Penalty:
    """A discriminator regulariser: ``weight`` times its value, every ``interval``-th D update.

    ``penalty(discriminator, real, fake)`` returns the weighted value (a scalar)
    that the discriminator update adds to its loss; the module multiplies it by
    ``interval`` on the updates that carry it (lazy regularisation, ``schedule.py``).
    ``weight`` (and any other number a subclass keeps) may be given as a
    schedule of the iteration (``gan_template.schedule``): the module sets it
    to the schedule's value before every iteration. Subclasses implement
    :meth:`value`; their constructors check their own arguments.

    Args:
        weight: the multiplier (WGAN-GP's lambda; for R1 and R2, gamma / 2).
        interval: apply on every ``interval``-th discriminator update (StyleGAN2: 16).
    """

    def __init__(self, weight: float | Schedule = 1.0, interval: int = 1) -> None:
        check_range("weight", weight, low=0.0)
        if interval < 1:
            raise ValueError(f"interval={interval}: must be >= 1")
        self.weight = weight
        self.interval = interval

    def value(self, discriminator: Callable[..., Tensor], real: Tensor, fake: Tensor) -> Tensor:
        """The unweighted penalty."""
        raise NotImplementedError

    def __call__(self, discriminator: Callable[..., Tensor], real: Tensor, fake: Tensor) -> Tensor:
        return current(self.weight) * self.value(discriminator, real, fake)

    def __repr__(self) -> str:
        arguments = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({arguments})"


class GradientPenalty(Penalty):
    """WGAN-GP (Gulrajani et al., 2017); they use weight 10 on every critic update."""

    def __init__(self, weight: float | Schedule = 10.0, interval: int = 1) -> None:
        super().__init__(weight, interval)

    def value(self, discriminator: Callable[..., Tensor], real: Tensor, fake: Tensor) -> Tensor:
        return gradient_penalty(discriminator, real, fake)


class R1(Penalty):
    """R1 on real samples; ``weight`` is StyleGAN2's gamma / 2."""

    def value(self, discriminator: Callable[..., Tensor], real: Tensor, fake: Tensor) -> Tensor:
        return r1_penalty(discriminator, real)


class R2(Penalty):
    """R2 on generated samples; ``weight`` is gamma / 2."""

    def value(self, discriminator: Callable[..., Tensor], real: Tensor, fake: Tensor) -> Tensor:
        return r2_penalty(discriminator, fake)


class R1R2(Penalty):
    """R1 on real plus R2 on generated samples, each with its own weight (R3GAN uses equal ones).

    Args:
        weight: R1's weight (gamma / 2).
        r2_weight: R2's weight; None: the same as ``weight`` (and its schedule).
        interval: as :class:`Penalty`.
    """

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

    def __call__(self, discriminator: Callable[..., Tensor], real: Tensor, fake: Tensor) -> Tensor:
        weight = current(self.weight)
        r2_weight = weight if self.r2_weight is None else current(self.r2_weight)
        return weight * r1_penalty(discriminator, real) + r2_weight * r2_penalty(
            discriminator, fake
        )

    def value(self, discriminator: Callable[..., Tensor], real: Tensor, fake: Tensor) -> Tensor:
        return r1_penalty(discriminator, real) + r2_penalty(discriminator, fake)

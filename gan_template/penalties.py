"""Discriminator regularisers as pure functions.

Both penalties differentiate the discriminator's output with respect to its
input with ``create_graph=True`` so the penalty itself can be back-propagated
into the discriminator's weights.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


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


#: ``penalty(discriminator, real, fake) -> scalar``, by config name.
Penalty = Callable[[Callable[..., Tensor], Tensor, Tensor], Tensor]

PENALTIES: dict[str, Penalty] = {
    "gradient_penalty": gradient_penalty,
    "r1": lambda discriminator, real, fake: r1_penalty(discriminator, real),
    "r2": lambda discriminator, real, fake: r2_penalty(discriminator, fake),
    "r1_r2": lambda discriminator, real, fake: (
        r1_penalty(discriminator, real) + r2_penalty(discriminator, fake)
    ),
}


def get_penalty(name: str | None) -> Penalty | None:
    """Look a penalty up by its config name (``none`` or null for no penalty)."""
    if name is None or name == "none":
        return None
    try:
        return PENALTIES[name]
    except KeyError:
        raise ValueError(
            f"penalty {name!r} is not known; choose one of {['none', *sorted(PENALTIES)]}"
        ) from None

"""Adversarial losses: pure functions of discriminator outputs, and the objects a config selects.

Each loss is a pair: the discriminator's loss given its outputs (logits) on
real and fake samples, and the generator's loss given its outputs on fake
samples (and, for relativistic losses, on the real ones: ``pairs_real_and_fake``).
Both return a scalar (mean over the batch). The functions are the maths, each
checked by hand in ``tests/test_losses.py``; the classes below are what
``conf/loss/*.yaml`` names with ``_target_`` (their constructor arguments are
the loss's hyperparameters). Nothing here knows about optimizers, Lightning or
Hydra. A loss of your own subclasses :class:`AdversarialLoss`, in your package
if you like (``docs/extending.md``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeAlias

import torch
import torch.nn.functional as F
from torch import Tensor

#: What a loss or regulariser may return: its value, or its value and named terms to log
#: (``(r1 + r2, {"r1": r1, "r2": r2})``). The module logs each term beside the value as
#: ``<value's name>/<term>`` (``d_penalty/r1``), detached, with no host sync of its own.
Reported: TypeAlias = "Tensor | tuple[Tensor, Mapping[str, Tensor]]"


def split_terms(result: Reported) -> tuple[Tensor, Mapping[str, Tensor]]:
    """``(value, terms)`` of what a part returned (no terms when it returned a tensor)."""
    if isinstance(result, Tensor):
        return result, {}
    value, terms = result
    return value, terms


def non_saturating_d(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """-log D(x) - log(1 - D(G(z))), with D = sigmoid(logits) (Goodfellow et al., 2014)."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def non_saturating_g(fake_logits: Tensor, real_logits: Tensor | None = None) -> Tensor:
    """-log D(G(z)): the non-saturating generator loss of Goodfellow et al. (2014), section 3."""
    return F.softplus(-fake_logits).mean()


def hinge_d(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """max(0, 1 - D(x)) + max(0, 1 + D(G(z))) (Lim & Ye, 2017; Miyato et al., 2018)."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def hinge_g(fake_logits: Tensor, real_logits: Tensor | None = None) -> Tensor:
    """-D(G(z)): the generator side of the hinge loss."""
    return -fake_logits.mean()


def wasserstein_d(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """D(G(z)) - D(x): the critic loss of WGAN (Arjovsky et al., 2017); needs a Lipschitz penalty."""
    return fake_logits.mean() - real_logits.mean()


def wasserstein_g(fake_logits: Tensor, real_logits: Tensor | None = None) -> Tensor:
    """-D(G(z))."""
    return -fake_logits.mean()


def least_squares_d(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """((D(x) - 1)^2 + D(G(z))^2) / 2: LSGAN with targets a=0, b=1 (Mao et al., 2017)."""
    return 0.5 * ((real_logits - 1.0).pow(2).mean() + fake_logits.pow(2).mean())


def least_squares_g(fake_logits: Tensor, real_logits: Tensor | None = None) -> Tensor:
    """(D(G(z)) - 1)^2 / 2, the generator target c=1."""
    return 0.5 * (fake_logits - 1.0).pow(2).mean()


def relativistic_d(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """softplus(D(G(z)) - D(x)) on paired samples: the relativistic pairing GAN (RpGAN).

    Jolicoeur-Martineau (2019), "relativistic standard GAN"; Huang et al. (2024,
    R3GAN) show it, with R1 and R2, trains without the usual tricks. Real and
    fake batches are paired by position, so they must have the same size.
    """
    return F.softplus(fake_logits - real_logits).mean()


def relativistic_g(fake_logits: Tensor, real_logits: Tensor | None = None) -> Tensor:
    """softplus(D(x) - D(G(z))): the generator side of RpGAN, on the same pairs."""
    if real_logits is None:
        raise ValueError("the relativistic generator loss needs the discriminator's real logits")
    return F.softplus(real_logits - fake_logits).mean()


class AdversarialLoss:
    """A discriminator loss and the generator loss it is paired with.

    Subclasses override both methods; hyperparameters are constructor
    arguments (the config's keys under ``loss:``), checked there.
    """

    #: The generator's loss reads D(real) too: the G update needs a D forward on real data.
    pairs_real_and_fake: bool = False

    # Either may return ``(loss, {"name": term, ...})`` to have terms logged as
    # ``d_loss/<name>`` or ``g_loss/<name>`` (``Reported``).

    def discriminator_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Reported:
        raise NotImplementedError

    def generator_loss(self, fake_logits: Tensor, real_logits: Tensor | None = None) -> Reported:
        raise NotImplementedError

    def __repr__(self) -> str:
        arguments = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({arguments})"


# The losses above as the objects conf/loss/*.yaml names: each method is its pure function.


class NonSaturating(AdversarialLoss):
    """The standard GAN loss with the non-saturating generator loss (Goodfellow et al., 2014)."""

    discriminator_loss = staticmethod(non_saturating_d)
    generator_loss = staticmethod(non_saturating_g)


class Hinge(AdversarialLoss):
    """The hinge loss of SNGAN and BigGAN."""

    discriminator_loss = staticmethod(hinge_d)
    generator_loss = staticmethod(hinge_g)


class Wasserstein(AdversarialLoss):
    """The WGAN critic loss; pair it with a Lipschitz penalty (penalty=gradient_penalty)."""

    discriminator_loss = staticmethod(wasserstein_d)
    generator_loss = staticmethod(wasserstein_g)


class LeastSquares(AdversarialLoss):
    """LSGAN with targets 0 (fake), 1 (real) and 1 (the generator's)."""

    discriminator_loss = staticmethod(least_squares_d)
    generator_loss = staticmethod(least_squares_g)


class Relativistic(AdversarialLoss):
    """The relativistic pairing loss (RpGAN) of R3GAN; both losses read D(real) and D(fake)."""

    pairs_real_and_fake = True
    discriminator_loss = staticmethod(relativistic_d)
    generator_loss = staticmethod(relativistic_g)


@torch.no_grad()  # metrics only: no autograd bookkeeping for them
def discriminator_statistics(real_logits: Tensor, fake_logits: Tensor) -> dict[str, Tensor]:
    """Mean logits on real and fake samples, and the fractions the discriminator gets right.

    Accuracy counts real samples scored above 0 and fake samples scored below
    0: meaningful for every loss here, since all of them push real logits up
    and fake logits down around 0.
    """
    return {
        "d_real": real_logits.mean(),
        "d_fake": fake_logits.mean(),
        "d_accuracy_real": (real_logits > 0).float().mean(),
        "d_accuracy_fake": (fake_logits < 0).float().mean(),
    }

"""Parts a user might write with a broken contract (tests/test_bad_input.py selects them)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from gan_template.losses import AdversarialLoss, non_saturating_d
from gan_template.penalties import DiscriminatorPass, Penalty


class OnlyDiscriminatorLoss(AdversarialLoss):
    """Forgot generator_loss."""

    discriminator_loss = staticmethod(non_saturating_d)


class ImageGradientPenalty(Penalty):
    """Differentiates the logits with respect to the images, without ``input_gradients = True``."""

    def value(self, outputs: DiscriminatorPass) -> Tensor:
        (grad,) = torch.autograd.grad(outputs.real_logits.sum(), outputs.real, create_graph=True)
        return grad.square().sum(dim=list(range(1, grad.dim()))).mean()


class FloatPenalty(Penalty):
    """Returns a Python number (``.item()``)."""

    def value(self, outputs: DiscriminatorPass) -> Tensor:
        return outputs.real_logits.square().mean().item()  # type: ignore[return-value]


def two_flags(metrics: Mapping[str, Tensor], iteration: int) -> Tensor:
    """Returns one flag per metric instead of one."""
    return torch.stack([value > 100 for value in metrics.values()])


class GeneratorWithoutLatentDim(torch.nn.Module):
    """A generator that does not say how large its noise is (``latent_dim``)."""

    def __init__(self, data_dim: int = 2, **recipe_settings: object) -> None:
        super().__init__()
        self.net = torch.nn.Linear(8, data_dim)
        self.sample_shape = (data_dim,)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)

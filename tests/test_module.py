"""Pieces of GANModule that are checked on their own."""

from __future__ import annotations

import torch
from torch import nn

from gan_template.module import frozen


def test_frozen_network_passes_gradients_through_without_computing_its_own() -> None:
    generator, discriminator = nn.Linear(2, 2), nn.Linear(2, 1)
    generator.bias.requires_grad_(False)  # frozen by the user: must stay frozen
    discriminator.bias.requires_grad_(False)
    with frozen(discriminator):
        discriminator(generator(torch.randn(4, 2))).sum().backward()
    assert discriminator.weight.grad is None  # no weight gradient for the frozen net
    assert generator.weight.grad is not None  # but the gradient flowed through it
    assert discriminator.weight.requires_grad  # restored afterwards
    assert not discriminator.bias.requires_grad and not generator.bias.requires_grad


def test_frozen_restores_on_error() -> None:
    net = nn.Linear(2, 1)
    try:
        with frozen(net):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert all(p.requires_grad for p in net.parameters())

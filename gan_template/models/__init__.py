"""Generator and discriminator families. Plain torch: no Lightning, no Hydra.

Every generator has ``latent_dim`` and ``sample_shape`` attributes and is called
as ``generator(z)``; every discriminator maps a batch of samples to one logit
per sample, shape ``(batch,)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from gan_template.errors import ConfigError


def _attribute(net: nn.Module, name: str, meaning: str) -> Any:
    value = getattr(net, name, None)
    if value is None:
        raise ConfigError(
            f"{type(net).__name__} has no `{name}` attribute; every generator must set "
            f"self.{name} ({meaning}) in __init__ (see docs/extending.md)"
        )
    return value


def latent_dim(generator: nn.Module) -> int:
    """The size of the noise vector ``generator`` takes."""
    return int(_attribute(generator, "latent_dim", "the size of its noise input"))


def sample_shape(net: nn.Module) -> tuple[int, ...]:
    """The shape of one sample ``net`` produces (generators) or reads."""
    return tuple(_attribute(net, "sample_shape", "the shape of one generated sample"))


def num_classes(generator: nn.Module) -> int:
    """Classes a conditional generator takes labels of; 0 for unconditional ones."""
    return int(getattr(generator, "num_classes", 0))


@torch.no_grad()
def generate(
    generator: nn.Module, noise: Tensor, labels: Tensor | None = None, chunk_size: int = 1024
) -> Tensor:
    """``generator(noise[, labels])`` in eval mode and in chunks, as float32 on the CPU.

    The network's train/eval mode is restored afterwards. Samplers (grids,
    metrics, ``gan_template.sample``) draw ``noise`` from their own seeded
    ``torch.Generator`` so that repeated evaluations are comparable.
    """
    device = next(generator.parameters()).device
    was_training = generator.training
    generator.eval()
    try:
        chunks = []
        for start in range(0, len(noise), chunk_size):
            z = noise[start : start + chunk_size].to(device)
            if labels is None:
                chunks.append(generator(z).float().cpu())
            else:
                chunks.append(
                    generator(z, labels[start : start + chunk_size].to(device)).float().cpu()
                )
    finally:
        generator.train(was_training)
    return torch.cat(chunks)

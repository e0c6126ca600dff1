"""Generator and discriminator families. Plain torch: no Lightning, no Hydra.

Every generator has ``latent_dim`` and ``sample_shape`` attributes and is called
as ``generator(z)``; every discriminator maps a batch of samples to one logit
per sample, shape ``(batch,)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from gan_template.harness.errors import ConfigError


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


class Decoded(nn.Module):
    """A generator of latents followed by a frozen decoder: its samples are images.

    What a GAN in an autoencoder's latent space samples with (``data/latents.py``):
    grids, metrics and the sampler call it as any generator.
    """

    def __init__(self, generator: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.generator = generator
        self.decoder = decoder
        self.latent_dim = latent_dim(generator)
        self.num_classes = num_classes(generator)
        self.sample_shape = sample_shape(decoder)

    def forward(self, noise: Tensor, labels: Tensor | None = None) -> Tensor:
        latents = self.generator(noise) if labels is None else self.generator(noise, labels)
        return self.decoder(latents)


@torch.no_grad()
def generate(
    generator: nn.Module, noise: Tensor, labels: Tensor | None = None, chunk_size: int = 1024
) -> Tensor:
    """``generator(noise[, labels])`` in eval mode and in chunks, as float32 on the CPU.

    The network's train/eval mode is restored afterwards. Samplers (grids,
    metrics, ``gan_template.sample``) draw ``noise`` from their own seeded
    ``torch.Generator`` so that repeated evaluations are comparable; it is cast
    to the network's dtype (``trainer.precision=bf16-true``, ``64-true``, ...).
    """
    weight = next(generator.parameters())
    device, dtype = weight.device, weight.dtype
    was_training = generator.training
    generator.eval()
    try:
        chunks = []
        for start in range(0, len(noise), chunk_size):
            z = noise[start : start + chunk_size].to(device, dtype)
            if labels is None:
                chunks.append(generator(z).float().cpu())
            else:
                chunks.append(
                    generator(z, labels[start : start + chunk_size].to(device)).float().cpu()
                )
    finally:
        generator.train(was_training)
    return torch.cat(chunks)


def slerp(start: Tensor, end: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation between rows of ``start`` and ``end`` at fractions ``t`` (broadcast).

    Gaussian latents concentrate near a sphere; walking along its great circle
    keeps every point there, where a straight line would pass through the
    low-norm interior the generator never saw (White, 2016). Nearly parallel
    pairs fall back to the straight line.
    """
    a, b = start / start.norm(dim=-1, keepdim=True), end / end.norm(dim=-1, keepdim=True)
    omega = (a * b).sum(dim=-1, keepdim=True).clamp(-1.0, 1.0).acos()
    sin = omega.sin()
    straight = sin.abs() < 1e-6
    safe = torch.where(straight, torch.ones_like(sin), sin)
    curved = (torch.sin((1 - t) * omega) * start + torch.sin(t * omega) * end) / safe
    return torch.where(straight, torch.lerp(start, end, t), curved)


def latent_walks(
    generator: nn.Module, rows: int = 8, steps: int = 10, seed: int = 0
) -> tuple[Tensor, Tensor | None]:
    """``rows`` walks of ``steps`` latents each, between two random latents per row (slerp).

    Returns the ``(rows * steps, latent_dim)`` noise, row by row, and the labels
    for a conditional generator (row ``r`` keeps class ``r % num_classes``).
    """
    if rows < 1 or steps < 2:
        raise ValueError(f"rows={rows}, steps={steps}: need rows >= 1 and steps >= 2")
    rng = torch.Generator().manual_seed(seed)
    ends = torch.randn(2, rows, 1, latent_dim(generator), generator=rng)
    t = torch.linspace(0.0, 1.0, steps).view(1, steps, 1)
    noise = slerp(ends[0], ends[1], t).reshape(rows * steps, -1)
    classes = num_classes(generator)
    labels = torch.arange(rows).repeat_interleave(steps) % classes if classes else None
    return noise, labels

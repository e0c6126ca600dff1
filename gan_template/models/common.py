"""Pieces shared by the image network families."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def num_doublings(resolution: int, base: int = 4) -> int:
    """How many 2x up/down-samplings link ``base`` x ``base`` and ``resolution``; validates it."""
    doublings = math.log2(resolution / base) if resolution > 0 else -1
    if resolution < 2 * base or doublings != int(doublings):
        raise ValueError(
            f"resolution={resolution} is not supported: the image networks need a power of two "
            f">= {2 * base} (16, 32 and 64 are the tested sizes); set data.resolution accordingly"
        )
    return int(doublings)


class LabelConditioning(nn.Module):
    """Concatenates a learned class embedding to the latent vector (conditional generators)."""

    def __init__(self, num_classes: int, embed_dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_classes, embed_dim)

    def forward(self, z: Tensor, labels: Tensor | None) -> Tensor:
        if labels is None:
            raise ValueError("this generator is class-conditional: pass labels (data with labels)")
        return torch.cat([z, self.embedding(labels)], dim=1)


class ProjectionHead(nn.Module):
    """Unconditional logit plus the class projection <embed(y), features> (Miyato & Koyama, 2018)."""

    def __init__(self, features: int, num_classes: int, spectral: bool) -> None:
        super().__init__()
        wrap = nn.utils.parametrizations.spectral_norm if spectral else (lambda m: m)
        self.linear = wrap(nn.Linear(features, 1))
        self.embedding = wrap(nn.Embedding(num_classes, features)) if num_classes else None

    def forward(self, features: Tensor, labels: Tensor | None) -> Tensor:
        logits = self.linear(features).squeeze(1)
        if self.embedding is not None:
            if labels is None:
                raise ValueError(
                    "this discriminator is class-conditional: pass labels (data with labels)"
                )
            logits = logits + (self.embedding(labels) * features).sum(dim=1)
        return logits

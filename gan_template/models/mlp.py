"""Multi-layer perceptrons: for low-dimensional (toy) data, and for small images."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import pairwise

from torch import Tensor, nn


def _mlp(
    in_dim: int,
    hidden_dim: int,
    depth: int,
    out_dim: int,
    activation: Callable[[], nn.Module],
    batch_norm: bool = False,
) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim)]
    for i in range(depth):
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers.append(activation())
        layers.append(nn.Linear(hidden_dim, hidden_dim if i < depth - 1 else out_dim))
    return nn.Sequential(*layers)


class MLPGenerator(nn.Module):
    """z ~ N(0, I) in ``latent_dim`` dimensions -> a point in ``data_dim`` dimensions."""

    def __init__(
        self,
        latent_dim: int = 2,
        hidden_dim: int = 128,
        depth: int = 3,
        data_dim: int = 2,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        if min(latent_dim, hidden_dim, depth, data_dim) < 1:
            raise ValueError(
                f"MLPGenerator sizes must be >= 1, got latent_dim={latent_dim}, "
                f"hidden_dim={hidden_dim}, depth={depth}, data_dim={data_dim}"
            )
        self.latent_dim = latent_dim
        self.sample_shape = (data_dim,)
        # PacGAN's toy generators use BatchNorm after every hidden layer.
        self.net = _mlp(latent_dim, hidden_dim, depth, data_dim, nn.ReLU, batch_norm)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class MLPDiscriminator(nn.Module):
    """A point in ``data_dim`` dimensions -> one logit.

    ``pack`` > 1 makes it a PacGAN discriminator (Lin et al., 2018): it judges
    ``pack`` samples jointly, which penalises mode collapse. The batch must then
    be divisible by ``pack`` and one logit is returned per pack.
    """

    def __init__(
        self, data_dim: int = 2, hidden_dim: int = 128, depth: int = 3, pack: int = 1
    ) -> None:
        super().__init__()
        if min(data_dim, hidden_dim, depth, pack) < 1:
            raise ValueError(
                f"MLPDiscriminator sizes must be >= 1, got data_dim={data_dim}, "
                f"hidden_dim={hidden_dim}, depth={depth}, pack={pack}"
            )
        self.pack = pack
        self.net = _mlp(data_dim * pack, hidden_dim, depth, 1, lambda: nn.LeakyReLU(0.2))

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[0] % self.pack:
            raise ValueError(
                f"batch of {x.shape[0]} is not divisible by model.discriminator.pack={self.pack}"
            )
        return self.net(x.reshape(x.shape[0] // self.pack, -1)).squeeze(-1)


class ImageMLPGenerator(nn.Module):
    """Noise -> image through fully connected layers (the generator of Lightning's GAN example).

    ``Linear -> LeakyReLU``, then ``Linear -> BatchNorm1d -> LeakyReLU`` for each
    further width, then ``Linear -> Tanh`` reshaped to ``(channels, resolution,
    resolution)``. Lightning's example passes 0.8 as BatchNorm's second
    argument, which is ``eps`` (probably meant as momentum); ``batch_norm_eps``
    keeps that for a like-for-like comparison.
    """

    def __init__(
        self,
        latent_dim: int = 100,
        widths: Sequence[int] = (128, 256, 512, 1024),
        channels: int = 1,
        resolution: int = 32,
        batch_norm_eps: float = 0.8,
    ) -> None:
        super().__init__()
        if not widths or min(latent_dim, channels, resolution, *widths) < 1:
            raise ValueError(
                f"ImageMLPGenerator sizes must be >= 1 with at least one width, got "
                f"latent_dim={latent_dim}, widths={list(widths)}, channels={channels}, "
                f"resolution={resolution}"
            )
        self.latent_dim = latent_dim
        self.sample_shape = (channels, resolution, resolution)
        layers: list[nn.Module] = [nn.Linear(latent_dim, widths[0]), nn.LeakyReLU(0.2)]
        for width_in, width_out in pairwise(widths):
            layers += [
                nn.Linear(width_in, width_out),
                nn.BatchNorm1d(width_out, eps=batch_norm_eps),
                nn.LeakyReLU(0.2),
            ]
        layers += [nn.Linear(widths[-1], math.prod(self.sample_shape)), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(z.shape[0], *self.sample_shape)


class ImageMLPDiscriminator(nn.Module):
    """Image -> one logit through fully connected layers (Lightning's GAN example, without
    its final sigmoid: the losses take logits)."""

    def __init__(
        self, channels: int = 1, resolution: int = 32, widths: Sequence[int] = (512, 256)
    ) -> None:
        super().__init__()
        if not widths or min(channels, resolution, *widths) < 1:
            raise ValueError(
                f"ImageMLPDiscriminator sizes must be >= 1 with at least one width, got "
                f"channels={channels}, resolution={resolution}, widths={list(widths)}"
            )
        layers: list[nn.Module] = [nn.Flatten()]
        for width_in, width_out in pairwise([channels * resolution**2, *widths]):
            layers += [nn.Linear(width_in, width_out), nn.LeakyReLU(0.2)]
        layers.append(nn.Linear(widths[-1], 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(-1)


__all__ = ["ImageMLPDiscriminator", "ImageMLPGenerator", "MLPDiscriminator", "MLPGenerator"]

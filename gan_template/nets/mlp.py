"""Multi-layer perceptrons for low-dimensional (toy) data."""

from __future__ import annotations

from collections.abc import Callable

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


__all__ = ["MLPDiscriminator", "MLPGenerator"]

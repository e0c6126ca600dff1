"""The KL-regularised convolutional autoencoder of latent diffusion (Rombach et al., 2022).

``encode`` maps an image to the mean and log-variance of a diagonal Gaussian
over a latent image of ``latent_channels`` at ``resolution / 2**downsamples``;
``decode`` maps a latent back; ``forward`` reconstructs from the mean. The
blocks are LDM's at a small size: residual blocks with GroupNorm and SiLU, a
strided convolution down, nearest-neighbour upsampling and a convolution up.
"""

from __future__ import annotations

from torch import Tensor, nn


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels // 4) or 1, channels)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _group_norm(channels), nn.SiLU(), nn.Conv2d(channels, out, 3, 1, 1),
            _group_norm(out), nn.SiLU(), nn.Conv2d(out, out, 3, 1, 1),
        )  # fmt: skip
        self.skip = nn.Conv2d(channels, out, 1) if channels != out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.body(x)


class KLAutoencoder(nn.Module):
    """Image -> Gaussian latent -> image, in [-1, 1] (the decoder ends in no squashing, as LDM's).

    Args:
        channels: image channels.
        resolution: image side; must be a multiple of ``2**downsamples``.
        latent_channels: channels of the latent image (LDM's f8 models: 4).
        width: channels of the outermost level, doubled per downsampling.
        downsamples: halvings between the image and the latent (LDM's ``f = 2**downsamples``).
    """

    def __init__(
        self,
        channels: int = 1,
        resolution: int = 16,
        latent_channels: int = 4,
        width: int = 32,
        downsamples: int = 2,
    ) -> None:
        super().__init__()
        if downsamples < 0 or resolution % 2**downsamples:
            raise ValueError(
                f"resolution={resolution} cannot be halved {downsamples} times (needs a multiple "
                f"of {2**downsamples}); set model.generator.downsamples lower or change "
                "data.resolution"
            )
        self.channels = channels
        self.in_channels = channels
        self.resolution = resolution
        self.sample_shape = (channels, resolution, resolution)
        side = resolution // 2**downsamples
        #: The shape of one latent (a latent GAN generates these).
        self.latent_shape = (latent_channels, side, side)
        widths = [width * 2**level for level in range(downsamples + 1)]
        encoder: list[nn.Module] = [nn.Conv2d(channels, widths[0], 3, 1, 1)]
        for level in range(downsamples):
            encoder += [
                ResidualBlock(widths[level], widths[level + 1]),
                nn.Conv2d(widths[level + 1], widths[level + 1], 4, 2, 1),
            ]
        encoder += [
            ResidualBlock(widths[-1], widths[-1]),
            _group_norm(widths[-1]),
            nn.SiLU(),
            nn.Conv2d(widths[-1], 2 * latent_channels, 3, 1, 1),
        ]
        self.encoder = nn.Sequential(*encoder)
        decoder: list[nn.Module] = [
            nn.Conv2d(latent_channels, widths[-1], 3, 1, 1),
            ResidualBlock(widths[-1], widths[-1]),
        ]
        for level in reversed(range(downsamples)):
            decoder += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(widths[level + 1], widths[level + 1], 3, 1, 1),
                ResidualBlock(widths[level + 1], widths[level]),
            ]
        decoder += [_group_norm(widths[0]), nn.SiLU(), nn.Conv2d(widths[0], channels, 3, 1, 1)]
        self.decoder = nn.Sequential(*decoder)

    @property
    def last_layer(self) -> Tensor:
        """The decoder's last convolution's weight (Esser et al.'s adaptive weight reads it)."""
        return self.decoder[-1].weight  # type: ignore[return-value]

    def encode(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """The posterior's mean and log-variance (clamped to [-30, 20], as LDM)."""
        mean, logvar = self.encoder(images).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, latents: Tensor) -> Tensor:
        return self.decoder(latents)

    def forward(self, images: Tensor) -> Tensor:
        """The reconstruction from the posterior's mean (evaluation, the sampler)."""
        return self.decode(self.encode(images)[0])

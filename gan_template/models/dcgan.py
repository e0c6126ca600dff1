"""DCGAN generator and discriminator (Radford et al., 2016) for any power-of-two resolution >= 8.

The generator goes 1x1 -> 4x4 with a transposed convolution, then doubles the
resolution with stride-2 transposed convolutions (BatchNorm + ReLU), halving
the width each time; the discriminator mirrors it with stride-2 convolutions
and LeakyReLU. ``num_classes > 0`` makes both class-conditional (a label
embedding concatenated to z; a projection discriminator).
"""

from __future__ import annotations

from torch import Tensor, nn

from gan_template.models.common import LabelConditioning, ProjectionHead, num_doublings


class DCGANGenerator(nn.Module):
    def __init__(
        self,
        latent_dim: int = 64,
        channels: int = 3,
        resolution: int = 32,
        width: int = 64,
        num_classes: int = 0,
        embed_dim: int = 32,
    ) -> None:
        super().__init__()
        doublings = num_doublings(resolution)
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        self.sample_shape = (channels, resolution, resolution)
        self.conditioning = LabelConditioning(num_classes, embed_dim) if num_classes else None
        in_dim = latent_dim + (embed_dim if num_classes else 0)
        top = width * 2 ** (doublings - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(in_dim, top, 4, 1, 0, bias=False),
            nn.BatchNorm2d(top),
            nn.ReLU(inplace=True),
        ]
        for i in range(doublings - 1):
            c_in, c_out = top // 2**i, top // 2 ** (i + 1)
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(True),
            ]
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if self.conditioning is not None:
            z = self.conditioning(z, labels)
        return self.net(z[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    def __init__(
        self,
        channels: int = 3,
        resolution: int = 32,
        width: int = 64,
        num_classes: int = 0,
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        doublings = num_doublings(resolution)
        self.sample_shape = (channels, resolution, resolution)
        wrap = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
        # No BatchNorm: it couples the samples of a batch, which breaks the
        # gradient penalty and R1 (per-sample input gradients).
        layers: list[nn.Module] = [
            wrap(nn.Conv2d(channels, width, 4, 2, 1)),
            nn.LeakyReLU(0.2, True),
        ]
        c = width
        for _ in range(doublings - 1):
            layers += [wrap(nn.Conv2d(c, c * 2, 4, 2, 1)), nn.LeakyReLU(0.2, True)]
            c *= 2
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = ProjectionHead(c * 4 * 4, num_classes, spectral_norm)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        if tuple(x.shape[1:]) != self.sample_shape:
            raise ValueError(
                f"discriminator expects images of shape {self.sample_shape}, got {tuple(x.shape[1:])}"
            )
        return self.head(self.features(x), labels)

"""SNGAN-style ResNet generator and discriminator (Miyato et al., 2018, appendix B.4).

Generator: z -> 4x4 feature map -> residual up-blocks (BatchNorm, ReLU,
nearest upsampling, 3x3 convs) -> BN, ReLU, 3x3 conv, tanh. Discriminator:
residual down-blocks with spectral normalisation on every layer, ReLU, global
sum pooling, a (projection) linear head. Works for power-of-two resolutions >= 8.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from gan_template.models.common import LabelConditioning, ProjectionHead, num_doublings

spectral_norm = nn.utils.parametrizations.spectral_norm


class UpBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(c_in), nn.BatchNorm2d(c_out)
        self.conv1, self.conv2 = nn.Conv2d(c_in, c_out, 3, 1, 1), nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = F.interpolate(F.relu(self.bn1(x)), scale_factor=2.0)
        h = self.conv2(F.relu(self.bn2(self.conv1(h))))
        return h + self.shortcut(F.interpolate(x, scale_factor=2.0))


class DownBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, first: bool = False) -> None:
        super().__init__()
        self.first = first
        self.conv1 = spectral_norm(nn.Conv2d(c_in, c_out, 3, 1, 1))
        self.conv2 = spectral_norm(nn.Conv2d(c_out, c_out, 3, 1, 1))
        self.shortcut = spectral_norm(nn.Conv2d(c_in, c_out, 1))

    def forward(self, x: Tensor) -> Tensor:
        h = x if self.first else F.relu(x)  # the first block sees the image: no ReLU before it
        h = F.avg_pool2d(self.conv2(F.relu(self.conv1(h))), 2)
        return h + self.shortcut(F.avg_pool2d(x, 2))


class ResNetGenerator(nn.Module):
    def __init__(
        self,
        latent_dim: int = 128,
        channels: int = 3,
        resolution: int = 32,
        width: int = 128,
        num_classes: int = 0,
        embed_dim: int = 32,
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        self.sample_shape = (channels, resolution, resolution)
        self.width = width
        self.conditioning = LabelConditioning(num_classes, embed_dim) if num_classes else None
        self.project = nn.Linear(latent_dim + (embed_dim if num_classes else 0), width * 4 * 4)
        self.blocks = nn.Sequential(
            *(UpBlock(width, width) for _ in range(num_doublings(resolution)))
        )
        self.out = nn.Sequential(
            nn.BatchNorm2d(width), nn.ReLU(True), nn.Conv2d(width, channels, 3, 1, 1), nn.Tanh()
        )

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if self.conditioning is not None:
            z = self.conditioning(z, labels)
        return self.out(self.blocks(self.project(z).view(-1, self.width, 4, 4)))


class ResNetDiscriminator(nn.Module):
    def __init__(
        self, channels: int = 3, resolution: int = 32, width: int = 128, num_classes: int = 0
    ) -> None:
        super().__init__()
        doublings = num_doublings(resolution)
        self.sample_shape = (channels, resolution, resolution)
        blocks = [DownBlock(channels, width, first=True)]
        blocks += [DownBlock(width, width) for _ in range(doublings - 1)]
        self.blocks = nn.Sequential(*blocks)
        self.head = ProjectionHead(width, num_classes, spectral=True)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        if tuple(x.shape[1:]) != self.sample_shape:
            raise ValueError(
                f"discriminator expects images of shape {self.sample_shape}, got {tuple(x.shape[1:])}"
            )
        features = F.relu(self.blocks(x)).sum(dim=(2, 3))
        return self.head(features, labels)

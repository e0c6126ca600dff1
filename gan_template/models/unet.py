"""pix2pix's networks (Isola et al., 2017): a U-Net generator and a PatchGAN discriminator.

The U-Net halves the image ``depth`` times (4x4 convolutions of stride 2) and
doubles it back, each decoder level reading the encoder level of its size
through a skip connection; dropout on the innermost decoder levels is its only
noise, as in the paper. The PatchGAN gives one logit per overlapping patch, so
it judges local texture and leaves the global layout to the L1 term.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm={kind!r}: must be 'batch', 'instance' or 'none'")


class UNetGenerator(nn.Module):
    """An image of ``in_channels`` to an image of ``channels``, same size, in [-1, 1].

    Args:
        in_channels: channels of the input image (the paired data's A side).
        channels: channels of the output image (B).
        resolution: image side; must be a multiple of ``2**depth``.
        depth: halvings (the paper's ``unet_256`` has 8, down to 1x1); None: down to 1x1.
        width: channels of the outermost level; doubled per level up to ``8 * width``.
        dropout: on the innermost ``dropout_levels`` decoder levels (the paper's noise: 0.5).
        norm: ``batch`` (the paper), ``instance`` or ``none``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: int = 1,
        resolution: int = 16,
        depth: int | None = None,
        width: int = 64,
        dropout: float = 0.5,
        dropout_levels: int = 3,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        if depth is None:
            depth = int(math.log2(resolution)) if resolution > 0 else 0
        if depth < 1 or resolution % 2**depth != 0 or resolution < 2**depth:
            fits = int(math.log2(resolution & -resolution)) if resolution > 0 else 0
            raise ValueError(
                f"resolution={resolution} cannot pass depth={depth} halvings of the U-Net (needs "
                f"a multiple of {2 ** max(depth, 1)}); set model.generator.depth to at most {fits} "
                f"or data.resolution to a multiple of {2 ** max(depth, 1)}"
            )
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout={dropout}: must be in [0, 1)")
        _norm(norm, 1)  # refuses an unknown kind now
        self.in_channels, self.channels, self.resolution = in_channels, channels, resolution
        self.depth = depth
        #: The shape of one output; the harness checks it against the data's targets.
        self.sample_shape = (channels, resolution, resolution)
        widths = [min(width * 2**level, 8 * width) for level in range(depth)]
        self.down = nn.ModuleList()
        previous = in_channels
        for level, out in enumerate(widths):
            innermost, outermost = level == depth - 1, level == 0
            self.down.append(
                nn.Sequential(
                    *([] if outermost else [nn.LeakyReLU(0.2)]),
                    nn.Conv2d(previous, out, 4, 2, 1, bias=norm != "batch" or innermost),
                    *([] if outermost or innermost else [_norm(norm, out)]),
                )
            )
            previous = out
        self.up = nn.ModuleList()
        for level in reversed(range(depth)):
            innermost, outermost = level == depth - 1, level == 0
            # The innermost level reads only the bottleneck; the others the level below
            # concatenated with the encoder's output of the same size.
            source = widths[level] if innermost else 2 * widths[level]
            target = channels if outermost else widths[level - 1]
            layers: list[nn.Module] = [
                nn.ReLU(),
                nn.ConvTranspose2d(source, target, 4, 2, 1, bias=outermost or norm != "batch"),
            ]
            if outermost:
                layers.append(nn.Tanh())
            else:
                layers.append(_norm(norm, target))
                if depth - 1 - level < dropout_levels and dropout > 0:
                    layers.append(nn.Dropout(dropout))
            self.up.append(nn.Sequential(*layers))

    def forward(self, image: Tensor) -> Tensor:
        skips = []
        x = image
        for block in self.down:
            x = block(x)
            skips.append(x)
        skips.pop()  # the bottleneck is x itself
        for block in self.up:
            x = block(x)
            if skips:
                x = torch.cat([x, skips.pop()], dim=1)
        return x


class PatchDiscriminator(nn.Module):
    """PatchGAN: a map of logits, one per overlapping patch, of shape ``(batch, 1, h, w)``.

    Args:
        channels: channels of the image it judges.
        condition_channels: channels of the input image concatenated before it
            (pix2pix's conditional D judges ``(input, image)``); 0: the image alone.
        layers: strided layers (the paper's 70x70 PatchGAN has 3 at 256 px); the
            patch grows with them.
        width: channels of the first layer, doubled per layer up to ``8 * width``.
        norm: ``batch`` (the paper), ``instance`` or ``none``.
    """

    def __init__(
        self,
        channels: int = 1,
        condition_channels: int = 0,
        layers: int = 3,
        width: int = 64,
        norm: str = "batch",
        resolution: int | None = None,
    ) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"layers={layers}: must be >= 1")
        if resolution is not None and resolution // 2**layers < 3:
            fits = max((n for n in range(1, 12) if resolution // 2**n >= 3), default=0)
            raise ValueError(
                f"resolution={resolution}: {layers} strided layers leave less than 3x3 pixels "
                f"for the last two 4x4 convolutions; set model.discriminator.layers to at most "
                f"{fits}" + ("" if fits else " (or raise data.resolution to 8 or more)")
            )
        _norm(norm, 1)
        self.channels = channels
        self.condition_channels = condition_channels
        blocks: list[nn.Module] = [
            nn.Conv2d(condition_channels + channels, width, 4, 2, 1),
            nn.LeakyReLU(0.2),
        ]
        previous = width
        for layer in range(1, layers + 1):
            out = min(width * 2**layer, 8 * width)
            stride = 2 if layer < layers else 1
            blocks += [
                nn.Conv2d(previous, out, 4, stride, 1, bias=norm != "batch"),
                _norm(norm, out),
                nn.LeakyReLU(0.2),
            ]
            previous = out
        blocks.append(nn.Conv2d(previous, 1, 4, 1, 1))
        self.net = nn.Sequential(*blocks)

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)

"""R3GAN's generator and discriminator (Huang et al., NeurIPS 2024), in plain PyTorch.

The networks of "The GAN is dead; long live the GAN!" as ``brownvc/R3GAN``
(``R3GAN/Networks.py``) builds them, without its custom CUDA operators (they
fail to build for many users: R3GAN issue 15, stylegan3 issues 124 and 633):

- Residual blocks of three convolutions: 1x1 expanding the channels
  (``expansion``), bias + LeakyReLU(0.2), a grouped 3x3 (``cardinality``
  groups), bias + LeakyReLU, 1x1 back. No normalisation layers; the
  convolutions have no bias (it lives in the activation).
- He ("MSR") initialisation, the block's gain scaled by L^(-1/4) (L residual
  blocks in the network) and the block's last convolution initialised to zero,
  so every residual block is the identity at initialisation.
- Resampling by a [1, 2, 1] low-pass filter (depthwise convolutions here,
  where R3GAN calls ``upfirdn2d``); a 1x1 convolution changes the width
  between stages.
- Generator: a learned 4x4 basis scaled per channel by a linear map of z
  (plus a class embedding when conditional), the stages, a 1x1 convolution to
  the image: no tanh. ``input_layer="linear"`` (not R3GAN's) maps z to the whole
  4x4 tensor instead, as DCGAN's first layer.
- Discriminator: a 1x1 convolution from the image, the stages (4x4 last), a
  depthwise 4x4 convolution and a linear layer; class-conditional by projection.

Sizes are given per stage, 4x4 first, for both networks (the discriminator
walks them backwards): an int means the same for every stage. A stage's
``expansion * width`` must be divisible by its cardinality.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan_template.models.common import num_doublings

NEGATIVE_SLOPE = 0.2
#: The gain that keeps a LeakyReLU(0.2) layer's output variance equal to its input's (He et al.).
ACTIVATION_GAIN = math.sqrt(2 / (1 + NEGATIVE_SLOPE**2))


def msr_init_(layer: nn.Conv2d | nn.Linear, gain: float = 1.0) -> nn.Module:
    """He initialisation: weights N(0, gain^2 / fan_in); zero gain makes the layer output zero."""
    fan_in = layer.weight[0].numel()
    with torch.no_grad():
        layer.weight.normal_(0.0, gain / math.sqrt(fan_in))
    return layer


def lowpass_kernel(taps: Sequence[float] = (1, 2, 1)) -> Tensor:
    """The 2-D resampling kernel: ``taps`` convolved with [1, 1] (box-filter interpolation), outer product, sum 1.

    [1, 2, 1] gives the separable 4x4 kernel of [1, 3, 3, 1] / 8: its response is
    1 at zero frequency and 0 at the Nyquist frequency.
    """
    taps64 = torch.tensor(taps, dtype=torch.float64).view(1, 1, -1)
    line = F.conv1d(taps64, torch.ones(1, 1, 2, dtype=torch.float64), padding=1).view(-1)
    kernel = torch.outer(line, line)
    return (kernel / kernel.sum()).float()


class Resample(nn.Module):
    """2x up- or down-sampling of every channel with the low-pass kernel (a depthwise convolution)."""

    kernel: Tensor

    def __init__(self, channels: int, up: bool, taps: Sequence[float] = (1, 2, 1)) -> None:
        super().__init__()
        self.up = up
        self.channels = channels
        kernel = lowpass_kernel(taps) * (4.0 if up else 1.0)  # upsampling keeps the mean
        # Not saved: it is a constant of the architecture, not a learned state.
        self.register_buffer(
            "kernel", kernel.expand(channels, 1, *kernel.shape).clone(), persistent=False
        )
        self.padding = len(taps) // 2

    def forward(self, x: Tensor) -> Tensor:
        kernel = self.kernel.to(x.dtype)
        if self.up:
            return F.conv_transpose2d(
                x, kernel, stride=2, padding=self.padding, groups=self.channels
            )
        return F.conv2d(x, kernel, stride=2, padding=self.padding, groups=self.channels)


class BiasedActivation(nn.Module):
    """``LeakyReLU(x + bias)``: the bias the convolutions do not have."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x + self.bias.to(x.dtype).view(1, -1, 1, 1), NEGATIVE_SLOPE)


def _conv(c_in: int, c_out: int, kernel: int = 1, groups: int = 1, gain: float = 1.0) -> nn.Conv2d:
    conv = nn.Conv2d(c_in, c_out, kernel, padding=(kernel - 1) // 2, groups=groups, bias=False)
    msr_init_(conv, gain)
    return conv


class ResidualBlock(nn.Module):
    """``x + conv1x1(act(conv3x3_grouped(act(conv1x1(x)))))``; the identity at initialisation.

    Args:
        channels: input and output width.
        cardinality: groups of the 3x3 convolution.
        expansion: the inner width is ``expansion * channels``.
        total_blocks: L, the number of residual blocks in the network: the gain
            is scaled by L^(-1/4) (R3GAN's fix-up style variance scaling).
    """

    def __init__(
        self, channels: int, cardinality: int, expansion: int, total_blocks: int, kernel: int = 3
    ) -> None:
        super().__init__()
        inner = channels * expansion
        if inner % cardinality:
            raise ValueError(
                f"cardinality={cardinality} does not divide the inner width {inner} "
                f"(= expansion {expansion} x width {channels}); choose a divisor"
            )
        linear_layers = 3
        gain = ACTIVATION_GAIN * total_blocks ** (-1 / (2 * linear_layers - 2))
        self.expand = _conv(channels, inner, 1, gain=gain)
        self.act1 = BiasedActivation(inner)
        self.spatial = _conv(inner, inner, kernel, groups=cardinality, gain=gain)
        self.act2 = BiasedActivation(inner)
        self.project = _conv(inner, channels, 1, gain=0.0)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.project(self.act2(self.spatial(self.act1(self.expand(x)))))


def per_stage(name: str, value: int | Sequence[int], stages: int, resolution: int) -> list[int]:
    """``value`` for each of ``stages`` stages (4x4 first): an int is repeated; a list must fit."""
    values = [int(value)] * stages if isinstance(value, int) else [int(v) for v in value]
    if len(values) != stages:
        sizes = ", ".join(str(4 * 2**i) for i in range(stages))
        raise ValueError(
            f"{name}={list(values)} has {len(values)} entries but resolution {resolution} has "
            f"{stages} stages ({sizes} px): give one value per stage, 4x4 first, or a single int"
        )
    if any(v < 1 for v in values):
        raise ValueError(f"{name}={values}: every entry must be >= 1")
    return values


def doubling_widths(
    widths: int, cardinality: int, width_max: int, stages: int
) -> tuple[list[int], list[int]]:
    """Widths from ``widths`` at the full resolution, doubled per lower stage up to ``width_max``,
    4x4 first; the cardinality scaled alike (the channels per group kept, as R3GAN's presets do).

    A narrow 4x4 stage starves the generator when z reaches the image only through the
    4x4 basis's channel scales (benchmarks/README.md, "R3GAN's recall").
    """
    if width_max < widths:
        raise ValueError(f"width_max={width_max} must be >= widths={widths}")
    if width_max % widths:
        raise ValueError(f"width_max={width_max} must be a multiple of widths={widths}")
    ws = [min(widths * 2 ** (stages - 1 - i), width_max) for i in range(stages)]
    return ws, [cardinality * w // widths for w in ws]


class _Sizes:
    """The per-stage sizes both networks share, checked once."""

    def __init__(
        self,
        resolution: int,
        widths: int | Sequence[int],
        blocks: int | Sequence[int],
        cardinality: int | Sequence[int],
        expansion: int,
        width_max: int | None = None,
    ) -> None:
        stages = num_doublings(resolution) + 1
        if width_max is not None:
            if not isinstance(widths, int) or not isinstance(cardinality, int):
                raise ValueError(
                    f"width_max={width_max} derives every stage's width and cardinality from "
                    f"widths and cardinality given as numbers, not lists ({widths}, {cardinality})"
                )
            if (expansion * widths) % cardinality:  # named as given, not as scaled
                raise ValueError(
                    f"cardinality={cardinality} does not divide the inner width "
                    f"{expansion * widths} (= expansion {expansion} x width {widths}); "
                    "choose a divisor"
                )
            widths, cardinality = doubling_widths(widths, cardinality, width_max, stages)
        self.widths = per_stage("widths", widths, stages, resolution)
        self.blocks = per_stage("blocks", blocks, stages, resolution)
        self.cardinality = per_stage("cardinality", cardinality, stages, resolution)
        if expansion < 1:
            raise ValueError(f"expansion={expansion}: must be >= 1")
        self.expansion = expansion
        self.total_blocks = max(1, sum(self.blocks))

    def residual_blocks(self, stage: int) -> list[ResidualBlock]:
        return [
            ResidualBlock(
                self.widths[stage], self.cardinality[stage], self.expansion, self.total_blocks
            )
            for _ in range(self.blocks[stage])
        ]


class R3GANGenerator(nn.Module):
    """z (and a label) -> image, through a learned 4x4 basis and residual stages.

    Args:
        latent_dim: size of z (R3GAN: 64).
        channels, resolution: of the images (a power of two from 8 up; 16 to 256 tested).
        widths, blocks, cardinality: per stage, 4x4 first (an int: every stage).
            R3GAN's CIFAR-10: widths 768, blocks 2, cardinality 96.
        expansion: inner width of the residual blocks over their width (R3GAN: 2).
        width_max: None: ``widths`` as given. A number: ``widths`` and ``cardinality``
            (numbers) are the full-resolution stage's, doubled per lower stage up
            to ``width_max`` (as DCGAN's widths; R3GAN's FFHQ-256 halves them upwards).
        num_classes: > 0 makes it class-conditional (an embedding of the label,
            ``embed_dim`` wide, concatenated to z; R3GAN: ``embed_dim = latent_dim``).
        embed_dim: None: ``latent_dim``.
        input_layer: how z enters. ``"basis"`` (R3GAN's): a learned 4x4 basis,
            each channel scaled by a linear map of z, so z varies only the
            4x4 stage's channel gains. ``"linear"``: a linear map of z to the
            whole 4x4 tensor (DCGAN's, ProGAN's), so z varies each position too.
            On the digits, "linear" raised recall by 0.04 and doubled FID on
            500 images (benchmarks/README.md, "R3GAN's recall").
    """

    def __init__(
        self,
        latent_dim: int = 64,
        channels: int = 3,
        resolution: int = 32,
        widths: int | Sequence[int] = 256,
        blocks: int | Sequence[int] = 2,
        cardinality: int | Sequence[int] = 32,
        expansion: int = 2,
        num_classes: int = 0,
        embed_dim: int | None = None,
        width_max: int | None = None,
        input_layer: str = "basis",
    ) -> None:
        super().__init__()
        if input_layer not in ("basis", "linear"):
            raise ValueError(f"input_layer={input_layer!r}: use 'basis' (R3GAN's) or 'linear'")
        sizes = _Sizes(resolution, widths, blocks, cardinality, expansion, width_max)
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        self.sample_shape = (channels, resolution, resolution)
        embed = (embed_dim or latent_dim) if num_classes else 0
        self.embedding = nn.Embedding(num_classes, embed) if num_classes else None
        if self.embedding is not None:
            # As a bias-free linear map of the one-hot label with He initialisation.
            nn.init.normal_(self.embedding.weight, 0.0, 1.0 / math.sqrt(num_classes))
        w = sizes.widths
        # Either way the 4x4 tensor starts with unit variance per element.
        if input_layer == "basis":
            self.basis: nn.Parameter | None = nn.Parameter(torch.randn(w[0], 4, 4))
            self.basis_scale = msr_init_(nn.Linear(latent_dim + embed, w[0], bias=False))
        else:
            self.basis = None
            self.to_4x4 = msr_init_(nn.Linear(latent_dim + embed, w[0] * 16, bias=False))
        stages: list[nn.Module] = [nn.Sequential(*sizes.residual_blocks(0))]
        for i in range(1, len(w)):
            transition: list[nn.Module] = [] if w[i - 1] == w[i] else [_conv(w[i - 1], w[i])]
            transition.append(Resample(w[i], up=True))
            stages.append(nn.Sequential(*transition, *sizes.residual_blocks(i)))
        self.stages = nn.Sequential(*stages)
        self.to_image = _conv(w[-1], channels)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if self.embedding is not None:
            if labels is None:
                raise ValueError("this generator is class-conditional: pass labels")
            z = torch.cat([z, self.embedding(labels)], dim=1)
        if self.basis is not None:
            x = self.basis.unsqueeze(0) * self.basis_scale(z)[:, :, None, None]
        else:
            x = self.to_4x4(z).view(z.shape[0], -1, 4, 4)
        return self.to_image(self.stages(x))


class R3GANDiscriminator(nn.Module):
    """image (and a label) -> one logit, through residual stages from the full resolution down to 4x4.

    Args:
        channels, resolution, widths, blocks, cardinality, expansion, width_max: as
            :class:`R3GANGenerator` (per stage, 4x4 first: the same lists fit both).
        num_classes: > 0: projection onto an embedding of the label, as wide as
            the 4x4 stage (R3GAN's choice).
    """

    def __init__(
        self,
        channels: int = 3,
        resolution: int = 32,
        widths: int | Sequence[int] = 256,
        blocks: int | Sequence[int] = 2,
        cardinality: int | Sequence[int] = 32,
        expansion: int = 2,
        num_classes: int = 0,
        width_max: int | None = None,
    ) -> None:
        super().__init__()
        sizes = _Sizes(resolution, widths, blocks, cardinality, expansion, width_max)
        self.sample_shape = (channels, resolution, resolution)
        w = sizes.widths
        self.from_image = _conv(channels, w[-1])
        stages: list[nn.Module] = []
        for i in range(len(w) - 1, 0, -1):
            transition: list[nn.Module] = [Resample(w[i], up=False)]
            if w[i] != w[i - 1]:
                transition.append(_conv(w[i], w[i - 1]))
            stages.append(nn.Sequential(*sizes.residual_blocks(i), *transition))
        stages.append(nn.Sequential(*sizes.residual_blocks(0)))
        self.stages = nn.Sequential(*stages)
        outputs = w[0] if num_classes else 1
        # The discriminative basis: one learned 4x4 filter per channel, then a linear map.
        self.basis = msr_init_(nn.Conv2d(w[0], w[0], 4, groups=w[0], bias=False))
        self.linear = msr_init_(nn.Linear(w[0], outputs, bias=False))
        self.embedding = nn.Embedding(num_classes, outputs) if num_classes else None
        if self.embedding is not None:
            gain = 1.0 / math.sqrt(outputs)
            nn.init.normal_(self.embedding.weight, 0.0, gain / math.sqrt(num_classes))

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        if tuple(x.shape[1:]) != self.sample_shape:
            raise ValueError(
                f"discriminator expects images of shape {self.sample_shape}, got {tuple(x.shape[1:])}"
            )
        features = self.basis(self.stages(self.from_image(x))).flatten(1)
        out = self.linear(features)
        if self.embedding is not None:
            if labels is None:
                raise ValueError("this discriminator is class-conditional: pass labels")
            return (out * self.embedding(labels)).sum(dim=1)
        return out.squeeze(1)

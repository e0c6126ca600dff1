"""Differentiable augmentation of every discriminator input (DiffAugment, Zhao et al., 2020).

With few training images the discriminator memorises them and its gradients
stop teaching the generator. DiffAugment transforms real *and* generated
images with the same random family of transformations before every
discriminator call, in the discriminator and the generator updates, so the
discriminator never sees an unaugmented image and the generator's gradient
flows back through the transformation. Each call draws fresh parameters per
image, on the images' device, from torch's global RNG (seeded runs repeat).

Plain torch: no Lightning, no Hydra.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def _uniform(x: Tensor) -> Tensor:
    """One U(0, 1) draw per image, shaped to broadcast over (C, H, W)."""
    return torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype)


def brightness(x: Tensor) -> Tensor:
    """Add a per-image offset in [-0.5, 0.5)."""
    return x + (_uniform(x) - 0.5)


def saturation(x: Tensor) -> Tensor:
    """Scale each pixel's distance from its channel mean by a factor in [0, 2)."""
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_uniform(x) * 2) + mean


def contrast(x: Tensor) -> Tensor:
    """Scale each image's distance from its mean by a factor in [0.5, 1.5)."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform(x) + 0.5) + mean


def translation(x: Tensor, ratio: float = 0.125) -> Tensor:
    """Shift each image by up to ``ratio`` of its size in each direction, filling with zeros."""
    n, _, height, width = x.shape
    max_y, max_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    shift_y = torch.randint(-max_y, max_y + 1, (n, 1, 1), device=x.device)
    shift_x = torch.randint(-max_x, max_x + 1, (n, 1, 1), device=x.device)
    # Index a one-pixel zero border for every source position outside the image.
    rows = (torch.arange(height, device=x.device).view(1, -1, 1) + shift_y + 1).clamp(0, height + 1)
    cols = (torch.arange(width, device=x.device).view(1, 1, -1) + shift_x + 1).clamp(0, width + 1)
    padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)  # (N, H+2, W+2, C)
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    return padded[batch, rows, cols].permute(0, 3, 1, 2)


def cutout(x: Tensor, ratio: float = 0.5) -> Tensor:
    """Zero a square of ``ratio`` of the image's size at a random position in each image."""
    n, _, height, width = x.shape
    size_y, size_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    top = torch.randint(0, height - size_y + 1, (n, 1, 1), device=x.device)
    left = torch.randint(0, width - size_x + 1, (n, 1, 1), device=x.device)
    rows = torch.arange(height, device=x.device).view(1, -1, 1)
    cols = torch.arange(width, device=x.device).view(1, 1, -1)
    inside = (rows >= top) & (rows < top + size_y) & (cols >= left) & (cols < left + size_x)
    return x * inside.logical_not().unsqueeze(1).to(x.dtype)


#: The policies of the DiffAugment paper, each a list of transformations applied in turn.
POLICIES: dict[str, Sequence[Callable[..., Tensor]]] = {
    "color": (brightness, saturation, contrast),
    "translation": (translation,),
    "cutout": (cutout,),
}


class DiffAugment:
    """Applies the chosen policies, in the order given, to a batch of images.

    Args:
        policy: comma-separated names from ``POLICIES`` (``color,translation,cutout``
            is the paper's choice with little data).
        translation_ratio: largest shift, as a fraction of the image size.
        cutout_ratio: side of the cut-out square, as a fraction of the image size.
    """

    def __init__(
        self,
        policy: str = "color,translation,cutout",
        translation_ratio: float = 0.125,
        cutout_ratio: float = 0.5,
    ) -> None:
        names = [name.strip() for name in policy.split(",") if name.strip()]
        unknown = [name for name in names if name not in POLICIES]
        if unknown or not names:
            raise ValueError(
                f"policy={policy!r}: must be comma-separated names from {sorted(POLICIES)}"
            )
        if not 0 <= translation_ratio < 1:
            raise ValueError(f"translation_ratio={translation_ratio}: must be in [0, 1)")
        if not 0 < cutout_ratio < 1:
            raise ValueError(f"cutout_ratio={cutout_ratio}: must be in (0, 1)")
        self.policy = names
        self.ratios = {translation: translation_ratio, cutout: cutout_ratio}

    def __call__(self, images: Tensor) -> Tensor:
        if images.dim() != 4:
            raise ValueError(
                f"DiffAugment transforms images of shape (N, C, H, W), got {tuple(images.shape)}"
            )
        for name in self.policy:
            for transform in POLICIES[name]:
                ratio = self.ratios.get(transform)
                images = transform(images) if ratio is None else transform(images, ratio)
        return images

    def __repr__(self) -> str:
        return f"DiffAugment(policy={','.join(self.policy)!r})"

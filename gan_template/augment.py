"""Differentiable augmentation of every discriminator input (DiffAugment, Zhao et al., 2020).

With few training images the discriminator memorises them and its gradients
stop teaching the generator. DiffAugment transforms real *and* generated
images with the same random family of transformations before every
discriminator call, in the discriminator and the generator updates, so the
discriminator never sees an unaugmented image and the generator's gradient
flows back through the transformation. Each call draws fresh parameters per
image, on the images' device, from torch's global RNG (seeded runs repeat).

Each transformation is applied to each image with a probability ``p`` (1 by
default, as DiffAugment does): a number, a schedule of the iteration (R3GAN
ramps it up over the run), or, with :class:`AdaptiveAugment`, a device tensor
tuned by ADA's overfitting heuristic (Karras et al., 2020).

Plain torch: no Lightning, no Hydra.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from gan_template.harness.running_state import Float32Buffers
from gan_template.schedule import Schedule, check_range, current


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
        probability: of applying each transformation to each image, in [0, 1]
            (a number or a schedule; 1: always, as DiffAugment does).
    """

    def __init__(
        self,
        policy: str = "color,translation,cutout",
        translation_ratio: float = 0.125,
        cutout_ratio: float = 0.5,
        probability: float | Schedule = 1.0,
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
        check_range("probability", probability, low=0.0, high=1.0)
        self.policy = names
        self.ratios = {translation: translation_ratio, cutout: cutout_ratio}
        self.probability = probability

    def chance(self) -> float | Tensor:
        """The probability of each transformation now (a number; a device tensor when adaptive)."""
        return current(self.probability)

    def __call__(self, images: Tensor) -> Tensor:
        if images.dim() != 4:
            raise ValueError(
                f"DiffAugment transforms images of shape (N, C, H, W), got {tuple(images.shape)}"
            )
        p = self.chance()
        if isinstance(p, float) and p <= 0.0:
            return images
        for name in self.policy:
            for transform in POLICIES[name]:
                ratio = self.ratios.get(transform)
                out = transform(images) if ratio is None else transform(images, ratio)
                if isinstance(p, Tensor) or p < 1.0:  # each image on its own draw
                    chosen = torch.rand(images.shape[0], 1, 1, 1, device=images.device) < p
                    out = torch.where(chosen, out, images)
                images = out
        return images

    def __repr__(self) -> str:
        return f"{type(self).__name__}(policy={','.join(self.policy)!r})"


class AdaptiveAugment(DiffAugment, Float32Buffers):  # DiffAugment first: its __call__
    """DiffAugment whose probability ADA's heuristic tunes (Karras et al., 2020, section 3).

    The module hands it the discriminator's logits of every real batch
    (:meth:`observe`). Over each ``interval`` discriminator updates it averages
    r_t = E[sign(D(x_real))], in [-1, 1]: how many more real images the
    discriminator calls real than fake, a measure of its overfitting (1: it
    calls every one real); then ``p`` moves by
    ``sign(r_t - target) * images / speed_images`` (the images seen in the
    interval: ``p`` can go from 0 to 1 in ``speed_images`` images) and stays
    >= 0, as in stylegan2-ada's ``training_loop.py``.

    ``p`` and the running sums are device tensors (no host sync), summed over
    ranks under DDP so every rank augments alike, saved in checkpoints (exact
    resume) and restored when an iteration is skipped; they stay float32 under
    ``bf16-true`` (``running_state.py``). ``p`` is logged as ``train/augment_p``.

    Args:
        policy, translation_ratio, cutout_ratio: as :class:`DiffAugment`.
        target: the r_t to hold (ADA: 0.6).
        interval: discriminator updates between adjustments (ADA: 4).
        speed_images: images for p to go from 0 to 1 (ADA: 500,000, "ada_kimg 500").
        initial: p at the start.
    """

    p: Tensor
    signs: Tensor

    def __init__(
        self,
        policy: str = "color,translation,cutout",
        translation_ratio: float = 0.125,
        cutout_ratio: float = 0.5,
        target: float = 0.6,
        interval: int = 4,
        speed_images: int = 500_000,
        initial: float = 0.0,
    ) -> None:
        nn.Module.__init__(self)
        DiffAugment.__init__(self, policy, translation_ratio, cutout_ratio)
        if not 0.0 < target < 1.0:
            raise ValueError(f"target={target}: must be in (0, 1) (ADA uses 0.6)")
        if interval < 1:
            raise ValueError(f"interval={interval}: must be >= 1 (ADA uses 4)")
        if speed_images < 1:
            raise ValueError(f"speed_images={speed_images}: must be >= 1 (ADA uses 500000)")
        if initial < 0.0:
            raise ValueError(f"initial={initial}: must be >= 0")
        self.target = target
        self.interval = interval
        self.speed_images = speed_images
        self.register_buffer("p", torch.tensor(float(initial)))
        self.register_buffer("signs", torch.zeros(2))  # sum of sign(D(real)), images counted

    def chance(self) -> Tensor:
        return self.p

    @torch.no_grad()
    def observe(self, real_logits: Tensor, update: int) -> dict[str, Tensor]:
        """Count the signs of D's logits of a real batch; adjust p after every ``interval``-th update.

        ``update`` is the discriminator update's 0-based index in the run (the
        module's count, which a skipped iteration does not advance).
        """
        self.signs[0].add_(real_logits.float().sign().nan_to_num(0.0).sum())
        self.signs[1].add_(real_logits.shape[0])
        if (update + 1) % self.interval == 0:
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                dist.all_reduce(self.signs)
            r_t = self.signs[0] / self.signs[1].clamp(min=1.0)
            step = (r_t - self.target).sign() * self.signs[1] / self.speed_images
            self.p.add_(step).clamp_(min=0.0)
            self.signs.zero_()
        return {"augment_p": self.p.clone()}

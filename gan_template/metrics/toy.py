"""Mode coverage on Gaussian mixtures, following PacGAN's protocol (Lin et al., 2018).

A generated sample is *high quality* if it lies within ``3 * std`` of its nearest
mode. A mode is *captured* if it is the nearest mode of at least one
high-quality sample. The reverse KL is KL(p_gen || uniform) over the modes,
where p_gen is the histogram of high-quality samples over their nearest modes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class ModeCoverage:
    modes_captured: int
    num_modes: int
    high_quality: float  # fraction of samples, in [0, 1]
    reverse_kl: float

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def mode_coverage(
    samples: Tensor, modes: Tensor, std: float, radius_in_std: float = 3.0
) -> ModeCoverage:
    """Score ``samples`` (n, d) against mixture ``modes`` (k, d) with per-mode ``std``."""
    if samples.dim() != 2 or samples.shape[1] != modes.shape[1]:
        raise ValueError(
            f"samples must have shape (n, {modes.shape[1]}), got {tuple(samples.shape)}"
        )
    samples = samples.detach().to(torch.float64)
    modes = modes.to(samples.device, torch.float64)
    distances = torch.cdist(samples, modes)  # (n, k)
    nearest_distance, nearest_mode = distances.min(dim=1)
    good = torch.isfinite(nearest_distance) & (nearest_distance <= radius_in_std * std)
    counts = torch.bincount(nearest_mode[good], minlength=modes.shape[0]).to(torch.float64)
    num_good = counts.sum()
    if num_good > 0:
        p = counts / num_good
        nonzero = p > 0
        reverse_kl = float((p[nonzero] * torch.log(p[nonzero] * modes.shape[0])).sum())
    else:
        reverse_kl = float("inf")
    return ModeCoverage(
        modes_captured=int((counts > 0).sum()),
        num_modes=modes.shape[0],
        high_quality=float(num_good / max(samples.shape[0], 1)),
        reverse_kl=reverse_kl,
    )

"""Exponential moving average of the generator's weights (Karras et al., 2018; 2020).

Samples and metrics use the averaged generator: it is smoother than the raw one
and usually scores markedly better.

Why not a library class: ``torch.optim.swa_utils.AveragedModel`` passes the
update count to its averaging function as a device tensor, so a ramped decay
would need a host sync or extra kernels per step; Lightning's
``EMAWeightAveraging`` (2.6) averages the generator *and* the discriminator and
keys its schedule on ``global_step`` parity, which is wrong for a GAN.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class GeneratorEMA(nn.Module):
    """Holds an averaged copy of a generator.

    The decay ramps up as in StyleGAN2: early in training the average spans at
    most ``rampup * updates`` generator updates, so it does not drag the
    initial random weights along; later it spans ``1 / (1 - decay)`` updates.

    Args:
        generator: the network to average (copied; the original is not touched).
        decay: the final per-update decay, in [0, 1).
        rampup: horizon growth per update (StyleGAN2 uses 0.05); None disables the ramp.
    """

    def __init__(
        self, generator: nn.Module, decay: float = 0.999, rampup: float | None = 0.05
    ) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema.decay={decay} must be in [0, 1)")
        if rampup is not None and rampup <= 0:
            raise ValueError(f"ema.rampup={rampup} must be > 0 (or null to disable the ramp)")
        self.decay = decay
        self.rampup = rampup
        # Left in train mode like the rest of the module (Lightning warns about
        # eval-mode modules at fit start); samplers switch it to eval themselves.
        self.module = copy.deepcopy(generator).requires_grad_(False)

    def decay_at(self, updates: int) -> float:
        """Decay applied after the generator update with 1-based index ``updates``."""
        if self.rampup is None:
            return self.decay
        horizon = min(1.0 / (1.0 - self.decay), self.rampup * updates)
        return 0.0 if horizon <= 1.0 else 1.0 - 1.0 / horizon

    @torch.no_grad()
    def update(self, generator: nn.Module, updates: int) -> None:
        """Move the average towards ``generator`` after its ``updates``-th update."""
        weight = 1.0 - self.decay_at(updates)
        averaged: list[torch.Tensor] = list(self.module.parameters())
        current: list[torch.Tensor] = list(generator.parameters())  # no_grad: no detach needed
        torch._foreach_lerp_(averaged, current, weight)
        # Buffers (BatchNorm statistics) are copied, not averaged, as in StyleGAN2.
        for mine, theirs in zip(self.module.buffers(), generator.buffers(), strict=False):
            mine.copy_(theirs)

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.module(*args)

"""Exponential moving average of the generator's weights (Karras et al., 2018; 2020).

Samples and metrics use the averaged generator: it is smoother than the raw one
and usually scores markedly better.

Why not a library class: ``torch.optim.swa_utils.AveragedModel`` passes the
update count to its averaging function as a device tensor, so a ramped decay
would need a host sync or extra kernels per step; Lightning's
``EMAWeightAveraging`` (2.6) averages the generator *and* the discriminator and
keys its schedule on ``global_step`` parity, which is wrong for a GAN.

BatchNorm: the running statistics a generator collects describe *its* weights'
activations, not those of their average. Sampling the EMA generator in eval
mode with the raw generator's statistics puts samples between the modes (the
README's toy benchmark shows by how much), so samples come from a copy whose
statistics are re-estimated from its own forward passes
(:func:`recompute_batch_norm`), as SWA does for averaged weights.
"""

from __future__ import annotations

import copy
from typing import Any, cast

import torch
from torch import nn

from gan_template import models
from gan_template.schedule import Schedule, check_range, current


def batch_norms(net: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``net`` that keep running statistics."""
    return [
        m
        for m in net.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


@torch.no_grad()
def recompute_batch_norm(
    generator: nn.Module, num_samples: int = 2048, batch_size: int = 256, seed: int = 0
) -> None:
    """Re-estimate ``generator``'s BatchNorm running statistics from its own outputs.

    Runs ``num_samples`` noise vectors (and uniform labels for a conditional
    generator) through it in train mode, averaging the statistics of all
    batches equally, from a private seeded RNG (the training's random stream is
    untouched, and the result depends on the weights only). The train/eval mode
    is restored. ``torch.optim.swa_utils.update_bn`` does the same from a data
    loader but passes a single input, so it cannot feed a conditional
    generator its labels.
    """
    norms = batch_norms(generator)
    if not norms or num_samples <= 0:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
    was_training = generator.training
    generator.train()
    weight = next(generator.parameters())
    rng = torch.Generator().manual_seed(seed)
    latent, classes = models.latent_dim(generator), models.num_classes(generator)
    try:
        for start in range(0, num_samples, batch_size):
            n = min(batch_size, num_samples - start)
            z = torch.randn(n, latent, generator=rng).to(weight.device, weight.dtype)
            if classes:
                generator(z, torch.randint(classes, (n,), generator=rng).to(weight.device))
            else:
                generator(z)
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        generator.train(was_training)


class GeneratorEMA(nn.Module):
    """Holds an averaged copy of a generator.

    The decay ramps up as in StyleGAN2: early in training the average spans at
    most ``rampup * updates`` generator updates, so it does not drag the
    initial random weights along; later it spans ``1 / (1 - decay)`` updates.

    Args:
        generator: the network to average (copied; the original is not touched).
        decay: the final per-update decay, in [0, 1) (a number, or a schedule of the
            iteration that the module evaluates: ``gan_template/schedule.py``).
        rampup: horizon growth per update (StyleGAN2 uses 0.05); None disables the ramp.
        batch_norm_samples: generated samples that re-estimate the BatchNorm
            statistics of the copy :meth:`for_sampling` returns; 0 samples with
            the raw generator's statistics (copied at every update).
        half_life: when set, replaces ``decay`` and ``rampup``: the iterations
            over which the past's weight in the average halves, so the decay is
            0.5^(1 / half_life) (0: no averaging). R3GAN schedules it (a cosine
            from 0 up, in images: ``half_life`` here is those images / batch).
    """

    def __init__(
        self,
        generator: nn.Module,
        decay: float | Schedule = 0.999,
        rampup: float | Schedule | None = 0.05,
        batch_norm_samples: int = 2048,
        half_life: float | Schedule | None = None,
    ) -> None:
        super().__init__()
        check_range("decay", decay, low=0.0, high=1.0, high_inclusive=False)
        if half_life is not None:
            check_range("half_life", half_life, low=0.0)
        self.half_life = half_life
        if rampup is not None:
            check_range("rampup", rampup, low=1e-12)
        if batch_norm_samples < 0:
            raise ValueError(f"batch_norm_samples={batch_norm_samples}: must be >= 0 (0: off)")
        self.decay = decay
        self.rampup = rampup
        self.batch_norm_samples = batch_norm_samples
        # Left in train mode like the rest of the module (Lightning warns about
        # eval-mode modules at fit start); samplers switch it to eval themselves.
        self.module = copy.deepcopy(generator).requires_grad_(False)
        # for_sampling's copy, kept until the average changes. A plain dict, so
        # the copy is no submodule: not in checkpoints, not moved with the module.
        self._sampler: dict[tuple[torch.device, torch.dtype], nn.Module] = {}
        # (generator, its average's parameters, its parameters, and both buffer lists).
        self._pairs: (
            tuple[
                nn.Module,
                list[torch.Tensor],
                list[torch.Tensor],
                list[torch.Tensor],
                list[torch.Tensor],
            ]
            | None
        ) = None
        self.register_load_state_dict_post_hook(GeneratorEMA._forget_sampler)

    def decay_at(self, updates: int) -> float:
        """Decay applied after the generator update with 1-based index ``updates``."""
        if self.half_life is not None:
            half_life = current(self.half_life)
            return 0.0 if half_life <= 0.0 else 0.5 ** (1.0 / half_life)
        decay = current(self.decay)
        if self.rampup is None:
            return decay
        horizon = min(1.0 / (1.0 - decay), current(self.rampup) * updates)
        return 0.0 if horizon <= 1.0 else 1.0 - 1.0 / horizon

    @torch.no_grad()
    def update(self, generator: nn.Module, updates: int) -> None:
        """Move the average towards ``generator`` after its ``updates``-th update."""
        if self._pairs is None or self._pairs[0] is not generator:
            # Listed once, not walked through both module trees on every update
            # (moves and dtype casts change tensors in place, not the lists).
            self._pairs = (
                generator,
                list(self.module.parameters()),
                list(generator.parameters()),  # no_grad: no detach needed
                list(self.module.buffers()),
                list(generator.buffers()),
            )
        _, averaged, current, my_buffers, their_buffers = self._pairs
        torch._foreach_lerp_(averaged, current, 1.0 - self.decay_at(updates))
        # Buffers are copied, not averaged, as in StyleGAN2 (BatchNorm statistics
        # are then re-estimated for sampling: for_sampling).
        if my_buffers:
            torch._foreach_copy_(my_buffers, their_buffers)
        self._sampler.clear()

    def for_sampling(self) -> nn.Module:
        """The averaged generator to sample from: a copy with BatchNorm statistics of its own.

        Without BatchNorm layers (or with ``batch_norm_samples=0``) this is the
        averaged module itself. The copy never changes the training state or
        checkpoints; it is made once per state of the average (an update or a
        loaded state dict makes a new one) and per device and dtype.
        """
        if not self.batch_norm_samples or not batch_norms(self.module):
            return self.module
        weight = next(self.module.parameters())
        key = (weight.device, weight.dtype)
        if key not in self._sampler:
            sampler = copy.deepcopy(self.module)
            recompute_batch_norm(sampler, self.batch_norm_samples)
            self._sampler.clear()
            self._sampler[key] = sampler
        return self._sampler[key]

    @staticmethod
    def _forget_sampler(module: nn.Module, incompatible_keys: Any) -> None:
        """After ``load_state_dict``: the average changed, so its sampling copy is stale."""
        cast(GeneratorEMA, module)._sampler.clear()

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.module(*args)

"""Toy 2-D Gaussian mixtures of PacGAN's benchmark (Lin et al., 2018).

- ring: 8 modes evenly spaced on a circle of radius 1, std 0.01.
- grid: 25 modes at {-4, -2, 0, 2, 4}^2, std 0.05.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from gan_template.data.sampling import training_loader


def mixture_modes(name: str) -> tuple[Tensor, float]:
    """The mode centres (k, 2) and per-mode std of a named mixture."""
    if name == "ring":
        angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
        return torch.stack([angles.cos(), angles.sin()], dim=1).float(), 0.01
    if name == "grid":
        axis = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0])
        return torch.cartesian_prod(axis, axis), 0.05
    raise ValueError(f"data.name={name!r} is not a toy mixture; choose 'ring' or 'grid'")


def sample_mixture(name: str, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
    """Draw ``num_samples`` points from the named mixture, modes chosen uniformly."""
    modes, std = mixture_modes(name)
    which = torch.randint(len(modes), (num_samples,), generator=generator)
    return modes[which] + std * torch.randn(num_samples, modes.shape[1], generator=generator)


class ToyMixtureDataModule(L.LightningDataModule):
    """A fixed training set drawn once from a mixture, served in shuffled batches.

    Args:
        name: ``ring`` or ``grid``.
        num_samples: size of the training set (drawn deterministically from ``data_seed``).
        batch_size: samples per discriminator update.
        data_seed: seed of the training set and of the shuffling order.
        scale: divide the data (and the modes and std used by the metric) by this.
            Networks learn faster on data of unit scale; the metric is unchanged
            because it only compares distances with the std.
    """

    def __init__(
        self,
        name: str = "ring",
        num_samples: int = 100_000,
        batch_size: int = 256,
        data_seed: int = 0,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        if scale <= 0:
            raise ValueError(f"data.scale={scale} must be > 0")
        modes, std = mixture_modes(name)
        self.modes, self.std, self.scale = modes / scale, std / scale, scale
        self.name: str = name
        self.num_samples = num_samples
        self.batch_size = batch_size
        #: Real batches per training step, one per discriminator update: set by the harness
        #: from the module's updates (``GANModule.batches_per_iteration``).
        self.batches_per_iteration = 1
        self.data_seed = data_seed
        self.sample_shape: tuple[int, ...] = (self.modes.shape[1],)
        self.dataset: TensorDataset | None = None

    def setup(self, stage: str) -> None:
        if self.dataset is None:
            points = sample_mixture(
                self.name, self.num_samples, torch.Generator().manual_seed(self.data_seed)
            )
            self.dataset = TensorDataset(points)

    def train_dataloader(self) -> DataLoader:
        assert self.dataset is not None, "setup() must run first"
        return training_loader(
            self.dataset, self.batch_size * self.batches_per_iteration, self.data_seed, self.trainer
        )

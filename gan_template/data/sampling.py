"""Index batches for map-style datasets: shuffled per epoch, sharded per rank, reproducible.

Lightning's automatic ``DistributedSampler`` injection is turned off
(``use_distributed_sampler=False``) because the data modules here shard
themselves: the order then depends only on ``(seed, epoch, rank, world_size)``,
never on global RNG state, which makes runs and resumes reproducible.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochShuffledBatches(Sampler[list[int]]):
    """Yields lists of indices, ``batch_size`` each, covering this rank's shard of one epoch.

    Every epoch draws a new permutation from ``seed + epoch``; rank ``r`` of
    ``w`` takes every ``w``-th index starting at ``r`` so ranks see disjoint
    data. Incomplete last batches are dropped (GAN steps want full batches).
    """

    def __init__(
        self, num_items: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        if num_items // world_size < batch_size:
            raise ValueError(
                f"a dataset of {num_items} items split over {world_size} rank(s) cannot fill one batch "
                f"of {batch_size}; lower data.batch_size (or train.n_critic) or use more data"
            )
        self.num_items = num_items
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return (self.num_items // self.world_size) // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.num_items, generator=generator)[self.rank :: self.world_size]
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield order[start : start + self.batch_size].tolist()

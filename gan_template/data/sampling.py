"""Index batches for map-style datasets: shuffled per epoch, sharded per rank, resumable mid-epoch.

Lightning's automatic ``DistributedSampler`` injection is turned off
(``use_distributed_sampler=False``) because the data modules here shard
themselves: the order then depends only on ``(seed, epoch, rank, world_size)``,
never on global RNG state. A resumed run starts its first epoch at the batch
after the last one the checkpoint had consumed, so it sees exactly the data
the uninterrupted run would have seen.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset

from gan_template.harness.errors import DataError
from gan_template.harness.lightning_internals import batches_done_in_epoch
from gan_template.harness.stopping import stop_signals


class EpochShuffledBatches(Sampler[Any]):
    """Yields batches of indices, ``batch_size`` each, covering this rank's shard of one epoch.

    Every epoch draws a new permutation from ``seed + epoch``; rank ``r`` of
    ``w`` takes every ``w``-th index starting at ``r`` so ranks see disjoint
    data. Incomplete last batches are dropped (GAN steps want full batches).
    ``start_batch`` skips that many batches of the next epoch iterated (once).
    Batches are lists of ints, or index tensors with ``as_tensor`` (for
    in-memory tensors: one tensor index per batch, no Python list to convert).
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        as_tensor: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        if num_items // world_size < batch_size:
            raise DataError(
                f"a dataset of {num_items} items split over {world_size} rank(s) cannot fill one batch "
                f"of {batch_size}; lower data.batch_size (or train.n_critic) or use more data"
            )
        self.num_items = num_items
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.as_tensor = as_tensor
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return (self.num_items // self.world_size) // self.batch_size

    def __iter__(self) -> Iterator[Any]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.num_items, generator=generator)[self.rank :: self.world_size]
        start, self.start_batch = self.start_batch, 0
        for first in range(start * self.batch_size, len(self) * self.batch_size, self.batch_size):
            batch = order[first : first + self.batch_size]
            yield batch if self.as_tensor else batch.tolist()


class ResumableDataLoader(DataLoader):
    """A DataLoader that Lightning recognises as resumable (it has ``state_dict``).

    The position itself is restored from Lightning's own loop progress in
    :func:`training_loader`, which knows how many batches were consumed (the
    loader cannot: it runs ahead of training by its prefetch depth).
    """

    def state_dict(self) -> dict[str, Any]:
        """Empty: the order is a function of (seed, epoch, rank), the position Lightning's."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to do: :func:`training_loader` already positioned the sampler."""


def training_loader(
    dataset: Dataset,
    batch_size: int,
    seed: int,
    trainer: L.Trainer | None,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """The loader both data modules use: per-rank shards, resumed at the right batch."""
    in_memory = isinstance(dataset, TensorDataset)
    batches = EpochShuffledBatches(
        len(dataset),  # type: ignore[arg-type]
        batch_size,
        seed=seed,
        rank=trainer.global_rank if trainer else 0,
        world_size=trainer.world_size if trainer else 1,
        as_tensor=in_memory,
    )
    if trainer is not None and trainer.fit_loop.restarting:
        # Batches of the current epoch the checkpoint had already trained on.
        batches.start_batch = batches_done_in_epoch(trainer)
    # Worker seeds come from this generator rather than the global RNG, so
    # creating an iterator (at every epoch, and at a resume) leaves the
    # training's random stream untouched.
    generator = torch.Generator().manual_seed(seed)
    if in_memory:
        # Gather a whole batch with one tensor index instead of collating
        # samples one by one (about 10x cheaper per batch); no workers needed.
        return ResumableDataLoader(dataset, sampler=batches, batch_size=None, generator=generator)
    return ResumableDataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        generator=generator,
        worker_init_fn=leave_stop_signals_to_the_main_process,
    )


def leave_stop_signals_to_the_main_process(worker_id: int) -> None:
    """In a loader worker: ignore SIGTERM (and submitit's preemption signal).

    SLURM's ``scancel`` and its time limit signal every process of the job. A
    worker killed by it makes the DataLoader raise in the main process ("worker
    killed by signal") before the run can save; ignoring it lets the main
    process stop after the iteration and save (stopping.py). The worker still
    ends when the loader shuts it down, or when the main process is gone.
    """
    for stop in stop_signals():
        signal.signal(stop, signal.SIG_IGN)


def train_dataloader_of(datamodule: Any) -> DataLoader:
    """``train_dataloader()`` of the data modules here (images, pairs, latents).

    Each holds ``dataset`` (after ``setup``), ``batch_size``, ``batches_per_iteration``
    (set by the harness), ``data_seed``, ``num_workers`` and ``pin_memory``.
    """
    assert datamodule.dataset is not None, "setup() must run first"
    return training_loader(
        datamodule.dataset,
        datamodule.batch_size * datamodule.batches_per_iteration,
        datamodule.data_seed,
        datamodule.trainer,
        num_workers=datamodule.num_workers,
        pin_memory=datamodule.pin_memory,
    )

"""At most one host sync per iteration that writes no logs: the GPU is never kept waiting.

Counted with :class:`gan_template.harness.host_syncs.HostSyncCounter` around a real
Trainer; on a GPU each counted read would make the CPU wait for the device.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import pytest
import torch
from helpers import run, without_evaluation
from lightning.pytorch.callbacks import Callback

from gan_template.harness.host_syncs import HostSyncCounter


class SyncsPerBatch(Callback):
    """Host syncs between consecutive batch starts (the step, then every batch-end hook)."""

    def __init__(self, counter: HostSyncCounter) -> None:
        self.counter = counter
        self.windows: list[dict[str, Any]] = []
        self._start = 0

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if self.windows:
            self.windows[-1]["syncs"] = self.counter.total - self._start
        self._start = self.counter.total

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        every = trainer.log_every_n_steps
        self.windows.append(
            {
                "iteration": pl_module.iteration,
                "skipped": not outputs,
                "logs": bool(outputs) and pl_module.iteration % every == 0,
                "epoch_end": trainer.is_last_batch,
                "syncs": None,
            }
        )


def loss_is_high(metrics: Mapping[str, torch.Tensor], iteration: int) -> torch.Tensor:
    """A predicate that reads a loss and stays on the device."""
    return next(iter(metrics.values())) > 100.0


PREDICATE = [
    f"skip.predicate={{_target_: {__name__}.loss_is_high, _partial_: true}}",
    f"extra_target_prefixes=[{__name__}.]",
]


TINY_TASK = ["data.resolution=16", "data.batch_size=8", "data.limit=64", "callbacks=default",
             "model.discriminator.width=8", "model.generator.width=8"]  # fmt: skip


def syncs_of_quiet_iterations(make_config, *overrides: str) -> list[int]:
    counter = SyncsPerBatch(HostSyncCounter())
    cfg = make_config(*overrides, "train.iterations=40", "trainer.log_every_n_steps=10", fast=True)
    with counter.counter:
        run(without_evaluation(cfg), counter)
    quiet = [w for w in counter.windows[:-1] if not w["logs"] and not w["epoch_end"]]
    assert len(quiet) >= 30
    return [w["syncs"] for w in quiet]


@pytest.mark.parametrize(
    "overrides",
    [
        ["experiment=ring"],
        ["experiment=ring", "train.n_critic=5"],
        ["experiment=ring", *PREDICATE],
        ["experiment=ring", "train.n_critic=5", *PREDICATE],
        ["experiment=ring", "skip.inject_nonfinite_at=[3,7]"],  # skipped iterations too
        ["experiment=dcgan", "data.resolution=8"],  # BatchNorm buffers
        ["experiment=wgan_gp", "data.resolution=8", "optim.gradient_clip_norm=1.0"],
        # Regularisers of both updates, lazy, with running state and terms of their own.
        [
            "experiment=ring",
            "penalty=r1_r2",
            "penalty.interval=3",
            "regularizers=[path_length,lecam]",
            "regularizers.path_length.interval=2",
        ],
        # The image-to-image tasks: pix2pix; the autoencoder's late discriminator and
        # adaptive weight (an all-reduce under DDP, no host read).
        ["experiment=pix2pix_digits", *TINY_TASK],
        [
            "experiment=autoencoder_digits",
            *TINY_TASK,
            "model.generator.downsamples=1",
            "model.discriminator.layers=2",
            "module.discriminator_start=5",
        ],
    ],
    ids=[
        "ring",
        "n_critic5",
        "predicate",
        "n_critic5+predicate",
        "skips",
        "dcgan",
        "wgan_gp+clip",
        "regularizers",
        "pix2pix",
        "autoencoder",
    ],
)
def test_an_iteration_that_writes_no_logs_reads_the_device_at_most_once(
    make_config, overrides: list[str]
) -> None:
    assert max(syncs_of_quiet_iterations(make_config, *overrides)) <= 1


def test_checks_off_read_nothing(make_config) -> None:
    syncs = syncs_of_quiet_iterations(
        make_config, "experiment=ring", "skip.check_losses=false", "skip.check_gradients=false"
    )
    assert max(syncs) == 0


def test_an_optimizer_without_a_device_side_skip_reads_the_flag_once_per_update(
    make_config,
) -> None:
    # The documented fallback (update.py), and proof that the counter sees the hot path.
    # SGD: non-fused Adam also reads its CPU-resident step counters, which on a GPU
    # are no syncs but look the same to a counter running on the CPU.
    plain_sgd = [
        f"{o}"
        for net in ("generator", "discriminator")
        for o in (
            f"optim.{net}._target_=torch.optim.SGD",
            f"~optim.{net}.betas",
            f"optim.{net}.fused=false",
        )
    ]
    syncs = syncs_of_quiet_iterations(
        make_config, "experiment=ring", "train.n_critic=2", *plain_sgd
    )
    assert set(syncs) == {2 + 1 + 1}  # two D updates, one G update, the iteration's decision


def test_the_counter_sees_every_kind_of_host_read() -> None:
    x = torch.ones(3)
    with HostSyncCounter() as syncs:
        x.sum().item()
        bool(x[0] > 0)
        x.tolist()
        x.numpy()
        float(x[1])
        torch.stack([x, x]).tolist()  # one transfer however many values
    assert syncs.total == 6
    assert syncs.counts == {"item": 3, "tolist": 2, "numpy": 1}
    assert all("test_host_syncs.py" in where for where in syncs.where)
    x.tolist()  # restored after the block
    assert syncs.total == 6

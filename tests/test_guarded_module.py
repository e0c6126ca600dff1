"""GuardedModule on its own: an algorithm that is not a GAN gets the harness's guarantees.

A one-update algorithm (an autoencoder of the ring's points, one network, one
optimizer) written on the three calls, trained by a plain Lightning Trainer:
iterations counted, an injected non-finite loss skipped and restored, the run
state and every rank's RNG in its checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import lightning as L
import torch
from helpers import StepRecorder
from torch import Tensor, nn

from gan_template.data.toy import ToyMixtureDataModule
from gan_template.harness.guarded_module import GuardedModule
from gan_template.harness.skip import SkipRule


class PointAutoencoder(GuardedModule):
    """x -> 1 number -> x: one network, one update named "fit"."""

    TRAINS: Mapping[str, Sequence[str]] = {"fit": ("autoencoder",)}
    PROGRESS = ("loss",)

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor] | None:
        (points,) = batch if isinstance(batch, (list, tuple)) else (batch,)
        self.begin_iteration()
        loss = (self.autoencoder(points) - points).square().mean()
        metrics = {"loss": loss}
        self.update("fit", loss, metrics)
        return self.end_iteration({name: value.detach() for name, value in metrics.items()})


def test_a_one_update_algorithm_counts_skips_and_saves_its_run_state(tmp_path) -> None:
    torch.manual_seed(0)
    module = PointAutoencoder(
        networks={"autoencoder": nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2))},
        optimizers={"fit": partial(torch.optim.Adam, lr=1e-2)},
        skip=SkipRule(max_consecutive=3, inject_nonfinite_at=[2]),
        max_iterations=6,
    )
    recorder = StepRecorder()
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, callbacks=[recorder],
    )  # fmt: skip
    trainer.fit(module, datamodule=ToyMixtureDataModule("ring", num_samples=512, batch_size=64))

    assert module.iteration == 6 and trainer.global_step == 7  # 7 batches, one skipped
    assert recorder.outputs[2] == {} and recorder.unchanged[2]  # the skip changed nothing
    assert module.skip_rule.counts == {"nonfinite_loss": 1}
    losses = [out["loss"].item() for out in recorder.outputs if out]
    assert losses[-1] < losses[0]  # it learns
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    state = torch.load(tmp_path / "last.ckpt", weights_only=False)["gan_template"]
    assert state["iteration"] == 6 and len(state["rng"]) == 1

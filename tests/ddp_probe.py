"""A callback the DDP tests add through the command line: each rank writes what it saw."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


class RankReport(Callback):
    """Writes ``rank{R}.json`` into the run directory at the end of training."""

    def __init__(self) -> None:
        self.skipped_batches: list[int] = []
        self.batches = 0

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if not outputs:
            self.skipped_batches.append(self.batches)
        self.batches += 1

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        digest = hashlib.sha256()
        finite = True
        for name, param in sorted(pl_module.named_parameters()):
            digest.update(name.encode())
            digest.update(param.detach().cpu().numpy().tobytes())
            finite &= bool(torch.isfinite(param).all())
        report = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "iteration": pl_module.iteration,
            "skipped_batches": self.skipped_batches,
            "skip_counts": dict(pl_module.skip_rule.counts),
            "weights_sha256": digest.hexdigest(),
            "weights_finite": finite,
            # Each rank's random stream (its latents): must differ between ranks.
            "rng_sha256": hashlib.sha256(torch.get_rng_state().numpy().tobytes()).hexdigest(),
            # The regularisers' running state (path length's mean), where there is one.
            "buffers": {
                name: float(value)
                for name, value in pl_module.state_dict().items()
                if name.startswith("regularizer_state.")
            },
            # Adaptive augmentation's probability, where there is one (ranks must agree).
            "augment_p": float(p)
            if (p := getattr(pl_module.augment, "p", None)) is not None
            else None,
        }
        path = Path(trainer.default_root_dir) / f"rank{trainer.global_rank}.json"
        path.write_text(json.dumps(report))


class DiscriminatorLossAbove:
    """A skip predicate: ``metrics["d_loss"] > threshold``, decided on the device.

    It reads ``d_loss`` at every update, the generator's too: a predicate sees
    the iteration's metrics so far. With ``rank`` and ``at`` it also asks to skip
    on that rank alone, the first time each iteration of ``at`` is attempted,
    so the ranks disagree.
    """

    def __init__(self, threshold: float = 10.0, rank: int = -1, at: Sequence[int] = ()) -> None:
        self.threshold, self.rank, self.pending = threshold, rank, set(at)

    def __call__(self, metrics: Mapping[str, torch.Tensor], iteration: int) -> torch.Tensor:
        wants_skip = metrics["d_loss"] > self.threshold
        if iteration in self.pending and "g_loss" in metrics:  # decided at the last update
            self.pending.discard(iteration)
            if torch.distributed.is_initialized() and torch.distributed.get_rank() == self.rank:
                wants_skip = torch.ones_like(wants_skip)
        return wants_skip

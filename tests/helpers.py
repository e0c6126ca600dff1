"""Test helpers: run a real Trainer from a composed config, and observe it from a callback."""

from __future__ import annotations

import copy
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, open_dict

from gan_template.harness.train import train


def run(cfg: DictConfig, *extra_callbacks: Callback) -> dict[str, Any]:
    """``train(cfg)`` with extra callbacks appended to the configured ones."""
    return train(cfg, extra_callbacks)


def without_evaluation(cfg: DictConfig) -> DictConfig:
    """Drop the metric callbacks (irrelevant to most behaviours, and they cost time)."""
    with open_dict(cfg):
        for name in ("image_eval", "toy_eval"):
            cfg.callbacks.pop(name, None)
    return cfg


def snapshot(module: L.LightningModule) -> dict[str, Any]:
    """Deep copies of every weight and of every optimizer's state."""
    optimizers = module.optimizers()  # a lone optimizer comes unlisted
    optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
    return {
        "weights": {k: v.detach().clone() for k, v in module.state_dict().items()},
        "optimizers": [copy.deepcopy(opt.optimizer.state_dict()) for opt in optimizers],
    }


def same_tensors(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_tensors(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_tensors(x, y) for x, y in zip(a, b, strict=False))
    return a == b


class StepRecorder(Callback):
    """Records, for every batch, what ``on_train_batch_end`` received and the state around it."""

    def __init__(self) -> None:
        self.outputs: list[dict[str, Any]] = []
        self.unchanged: list[bool] = []
        self.iterations: list[int] = []
        self._before: dict[str, Any] | None = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._before = snapshot(pl_module)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self.outputs.append(dict(outputs or {}))
        self.unchanged.append(same_tensors(self._before, snapshot(pl_module)))
        self.iterations.append(pl_module.iteration)
        self._before = None

"""Writing metrics at an iteration, straight to Lightning's loggers.

Everything the template logs goes through here rather than ``self.log``: the
x axis is the iteration (generator updates), values are written once (no
re-logging of stale on-step values after a skipped iteration), and nothing is
converted to a Python number except on the iterations that are logged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from lightning.fabric.loggers import Logger as FabricLogger
from lightning.pytorch.loggers import Logger
from torch import Tensor


def log_at_iteration(
    loggers: Iterable[Logger | FabricLogger], metrics: Mapping[str, Any], iteration: int
) -> None:
    """Write ``metrics`` with ``step=iteration`` to every logger and flush them.

    Flushing matters: file loggers such as ``CSVLogger`` buffer until
    ``save()``, which Lightning only calls for values that went through ``self.log``.
    """
    for logger in loggers:
        logger.log_metrics(dict(metrics), step=iteration)
        logger.save()


def as_numbers(metrics: Mapping[str, Tensor]) -> dict[str, float]:
    """``metrics`` as Python floats, read from the device in one transfer (one host sync).

    Loggers would otherwise call ``.item()`` on each value: a sync per metric.
    """
    if not metrics:
        return {}
    values = torch.stack([value.detach().float().reshape(()) for value in metrics.values()])
    return dict(zip(metrics, values.tolist(), strict=True))


class EpochMeans:
    """Means of the step outputs over an epoch, accumulated on the device (no host sync per step).

    One ``torch.stack`` and one ``add_`` per step, whatever the number of
    metrics. Steps may return different keys (a lazy penalty appears every
    few updates): each key set is summed in its own group and the groups are
    merged in :meth:`compute`.

    Why not ``torchmetrics.MeanMetric`` (one per metric): each ``update`` casts
    its input and, with the default ``nan_strategy``, checks for NaN on the host:
    a GPU sync per metric per step.
    """

    def __init__(self) -> None:
        self._groups: dict[tuple[str, ...], list[Any]] = {}  # names -> [sums, count]

    def update(self, values: Mapping[str, Tensor]) -> None:
        names = tuple(values)
        stacked = torch.stack([value.float() for value in values.values()])
        group = self._groups.get(names)
        if group is None:
            self._groups[names] = [stacked, 1]
        else:
            group[0].add_(stacked)
            group[1] += 1

    def compute(self, reduce: Callable[[Tensor], Tensor] | None = None) -> dict[str, Tensor]:
        """Each metric's mean over the steps that returned it.

        ``reduce`` averages a tensor over ranks (``trainer.strategy.reduce``);
        every rank must call it with the same metric names (ranks take the same
        steps and skips, so they do).
        """
        sums: dict[str, Tensor] = {}
        counts: dict[str, int] = {}
        for names, (group_sums, count) in self._groups.items():
            for name, total in zip(names, group_sums, strict=True):
                sums[name] = sums[name] + total if name in sums else total
                counts[name] = counts.get(name, 0) + count
        if not sums:
            return {}
        ordered = sorted(sums)
        means = torch.stack([sums[name] / counts[name] for name in ordered])
        if reduce is not None:
            means = reduce(means)
        return dict(zip(ordered, means, strict=True))

    def reset(self) -> None:
        self._groups.clear()

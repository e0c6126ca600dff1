"""Writing metrics at an iteration, straight to Lightning's loggers.

Everything the template logs goes through here rather than ``self.log``: the
x axis is the iteration (generator updates), values are written once (no
re-logging of stale on-step values after a skipped iteration), and nothing is
converted to a Python number except on the iterations that are logged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lightning.pytorch.loggers import Logger


def log_at_iteration(loggers: Iterable[Logger], metrics: Mapping[str, Any], iteration: int) -> None:
    """Write ``metrics`` with ``step=iteration`` to every logger and flush them.

    Flushing matters: file loggers such as ``CSVLogger`` buffer until
    ``save()``, which Lightning only calls for values that went through ``self.log``.
    """
    for logger in loggers:
        logger.log_metrics(dict(metrics), step=iteration)
        logger.save()

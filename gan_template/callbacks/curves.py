"""At the end of a run: ``<run dir>/curves.png``, the losses and evaluation metrics over iterations."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger

from gan_template.module import as_gan_module

#: What a run is judged by: its losses, and the evaluations' headline figures.
DEFAULT_METRICS = (
    "train/d_loss",
    "train/g_loss",
    "image/fid",
    "image/recall",
    "image/precision",
    "toy/reverse_kl",
    "toy/modes_captured",
)


class TrainingCurves(Callback):
    """Draws ``metrics`` from ``metrics.csv`` against the iteration, one panel each.

    For the user who would rather look than read a CSV. It reads the CSV
    logger's file (every ``logger=`` option keeps it), so the picture of a
    resumed run covers all its segments. Metrics the run did not log are left
    out; a run stopped by a signal draws nothing (its grace period is for saving).

    Args:
        metrics: the columns of ``metrics.csv`` to draw, in this order.
        filename: the picture's name in the run directory.
    """

    def __init__(
        self, metrics: Sequence[str] = DEFAULT_METRICS, filename: str = "curves.png"
    ) -> None:
        if not metrics:
            raise ValueError("metrics=[]: name at least one column of metrics.csv")
        self.metrics = list(metrics)
        self.filename = filename

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or as_gan_module(pl_module).stop_reason is not None:
            return
        logger = next((lg for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)
        if logger is None:
            return
        logger.save()  # rows still buffered
        table = Path(logger.log_dir) / "metrics.csv"
        if table.is_file():
            plot_curves(table, Path(trainer.default_root_dir) / self.filename, self.metrics)


def plot_curves(table: Path, picture: Path, metrics: Sequence[str]) -> list[str]:
    """Draw the ``metrics`` that ``table`` (a metrics.csv) holds into ``picture``; their names."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    series: dict[str, tuple[list[int], list[float]]] = {name: ([], []) for name in metrics}
    with open(table, newline="") as file:
        for row in csv.DictReader(file):
            for name, (steps, values) in series.items():
                value = _number(row.get(name))
                if value is not None and row.get("step"):
                    steps.append(int(float(row["step"])))
                    values.append(value)
    drawn = [name for name in metrics if series[name][0]]
    if not drawn:
        return []
    columns = min(2, len(drawn))
    rows = math.ceil(len(drawn) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3 * rows), squeeze=False)
    for axis, name in zip(axes.flat, drawn, strict=False):
        steps, values = series[name]
        axis.plot(steps, values, marker="o" if len(steps) < 30 else None, linewidth=1)
        axis.set_title(name)
        axis.set_xlabel("iteration")
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(drawn) :]:
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(picture, dpi=100)
    plt.close(figure)
    return drawn


def _number(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None

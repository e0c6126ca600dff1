"""Every use of Lightning's (and torch's) private or internal names, in one place.

Each function says why the template needs it and which public API would replace
it; ``tests/test_lightning_internals.py`` exercises each against the installed
version, so an upgrade that changes one fails there, with its name, instead of
somewhere deep in a run. This is why ``pyproject.toml`` pins ``lightning<2.7``:
raise the pin after that test file passes with the new version.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.logger import _add_prefix, _convert_params, _flatten_dict
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from torch import Tensor
from torch.optim import Optimizer


def add_prefix(metrics: Mapping[str, Any], prefix: str, join_char: str) -> dict[str, Any]:
    """Lightning's logger prefixing (``prefix/key``), for loggers that log with a step of ours.

    Public replacement: none; Lightning's loggers apply it inside ``log_metrics``.
    """
    return dict(_add_prefix(dict(metrics), prefix, join_char))


def flatten_params(params: Any) -> dict[str, Any]:
    """Hyperparameters flattened the way Lightning's loggers log them (``a/b/c`` keys).

    Needed to tell which MLflow parameters a resumed run has not logged yet
    (MLflow refuses to change a logged one). Public replacement: none.
    """
    return dict(_flatten_dict(_convert_params(params)))


class AppendingExperimentWriter(ExperimentWriter):
    """``CSVLogger``'s writer that keeps an existing ``metrics.csv`` and appends to it.

    Lightning's writer deletes the file in ``_check_log_dir_exists`` when it
    starts, which would erase a resumed run's earlier logs. Public
    replacement: none (an ``append`` option of ``CSVLogger`` would be one).
    """

    def _check_log_dir_exists(self) -> None:
        # Keep the file and learn its columns, so new rows append under the same header.
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                header = next(csv.reader(file), [])
            self.metrics_keys = sorted(header)


def progress_bar_due(bar: TQDMProgressBar, current: int, total: int | float | None) -> bool:
    """Whether ``bar`` redraws at ``current`` (its ``refresh_rate``, and always at the end).

    Lightning's ``TQDMProgressBar._should_update``; our bar counts iterations, not
    batches, so it calls the rule itself. Public replacement: none.
    """
    return bool(bar._should_update(current, total))  # type: ignore[arg-type]


def batches_done_in_epoch(trainer: L.Trainer) -> int:
    """Batches of the current epoch a restored checkpoint had already trained on.

    Lightning's loop progress (``fit_loop.epoch_loop.batch_progress``): a
    resumed run's sampler skips them, so it continues with the next batch.
    Public replacement: a stateful ``DataLoader`` (torchdata's
    ``StatefulDataLoader``), which Lightning 2.6 restores itself.
    """
    return int(trainer.fit_loop.epoch_loop.batch_progress.current.ready)


def precision_scaler(trainer: L.Trainer) -> Any:
    """The ``GradScaler`` of 16-mixed precision, or None (``MixedPrecision.scaler``)."""
    return getattr(trainer.precision_plugin, "scaler", None)


def step_takes_found_inf(optimizer: Optimizer) -> bool:
    """Whether ``optimizer.step`` reads a ``found_inf`` tensor (fused Adam, AdamW, SGD).

    torch's ``_step_supports_amp_scaling``: the protocol ``GradScaler`` uses to
    make a fused step apply nothing without a host sync (``update.py``).
    Public replacement: none in torch 2.x.
    """
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False))


def flag_nonfinite(tensors: list[Tensor], found: Tensor, one: Tensor) -> None:
    """Set ``found`` (a float32 tensor of one element) to 1 if any of ``tensors`` holds inf or NaN.

    torch's ``_amp_foreach_non_finite_check_and_unscale_``, the one fused pass
    ``GradScaler.unscale_`` makes over the gradients, with an inverse scale
    ``one`` (1.0), which leaves their values as they were. Cheaper than the
    gradient norm a check on it would need: a test per element and no
    reduction (``benchmarks/README.md``, "Differential profile"). The tensors
    must share ``found``'s device. Public replacement: none in torch 2.x.
    """
    torch._amp_foreach_non_finite_check_and_unscale_(tensors, found, one)


def disable_sigterm_broadcast(trainer: L.Trainer) -> None:
    """Stop Lightning broadcasting rank 0's SIGTERM flag at the start of every batch.

    Lightning 2.6's ``_TrainingEpochLoop._broadcast_sigterm_tensor``: under DDP,
    one collective and one host read per iteration. The template agrees on a
    SIGTERM in the gradient all-reduce instead (``stopping.py``) and replaces
    the handler whose flag this broadcast reads, so the broadcast only costs.
    Public replacement: none.
    """
    loop = trainer.fit_loop.epoch_loop
    if not hasattr(loop, "_broadcast_sigterm_tensor"):
        raise AttributeError(
            "Lightning's training epoch loop has no _broadcast_sigterm_tensor any more: "
            "check its SIGTERM handling against gan_template/harness/stopping.py"
        )
    loop._broadcast_sigterm_tensor = lambda: None  # type: ignore[method-assign]


# ---- Loggers and the DDP strategy: state their subclasses here read or set ------------------


def logger_run(logger: Any) -> Any:
    """The writer or run a Lightning logger makes on first use of ``experiment``; None before.

    ``CSVLogger``'s and ``WandbLogger``'s ``_experiment``. The template's
    subclasses (``loggers.py``) act once, when the run is created: the CSV
    logger puts an appending writer there first (Lightning's deletes
    ``metrics.csv``), W&B defines its step metric and remembers the run id for
    a resume. Public replacement: none (``experiment`` always creates it).
    """
    return logger._experiment


def set_logger_run(logger: Any, run: Any) -> None:
    """Set (or, with None, forget) what :func:`logger_run` returns."""
    logger._experiment = run


def logger_filesystem(logger: Any) -> Any:
    """The fsspec filesystem a ``CSVLogger`` writes through (``_fs``), to make its folder."""
    return logger._fs


def logger_prefix(logger: Any) -> str:
    """A logger's ``prefix`` setting (``_prefix``), which ``log_metrics`` prepends to names."""
    return logger._prefix


def mlflow_run_id(logger: Any) -> str | None:
    """The MLflow run ``MLFlowLogger`` has started, or None before its first use.

    ``_initialized`` and ``_run_id``: the public ``run_id`` property starts the
    run, which the template must not do just to ask (a resumed run is
    continued, not created). Public replacement: none.
    """
    return logger._run_id if logger._initialized else None


def ddp_settings(strategy: Any) -> tuple[Any, str]:
    """``DDPStrategy``'s timeout setting (``_timeout``; None: torch's default) and the backend
    it would pick (``_get_process_group_backend()``), for a process group made before
    Lightning's (``strategy.py``). Public replacement: none."""
    return strategy._timeout, strategy._get_process_group_backend()

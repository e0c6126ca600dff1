"""The run's loggers, and writing metrics and pictures to them at an iteration.

Everything the template logs goes through :func:`log_at_iteration` and
:func:`log_image` rather than ``self.log``: the x axis is the iteration
(generator updates), values are written once (no re-logging of stale on-step
values after a skipped iteration), and nothing is converted to a Python number
except on the iterations that are logged.

The logger classes are Lightning's, changed where a run directory must be
resumable: ``ckpt_path=last`` continues the same CSV file, W&B run and MLflow
run (the trackers' run ids are kept in ``<run dir>/tracker_runs.json``).
"""

from __future__ import annotations

import json
import netrc
import os
import socket
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.loggers import Logger as FabricLogger
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.loggers import MLFlowLogger as LightningMLFlowLogger
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from torch import Tensor

from gan_template.harness.checkpoint_io import write_atomically
from gan_template.harness.errors import ConfigError
from gan_template.harness.lightning_internals import (
    AppendingExperimentWriter,
    add_prefix,
    flatten_params,
    logger_filesystem,
    logger_prefix,
    logger_run,
    mlflow_run_id,
    set_logger_run,
)


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


def log_image(loggers: Iterable[Logger], key: str, png: Path, iteration: int) -> None:
    """Send a picture the run saved (``png``) to the loggers that show pictures."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            from torchvision.io import ImageReadMode, read_image

            image = read_image(str(png), ImageReadMode.RGB)
            logger.experiment.add_image(key, image, iteration)
        elif isinstance(logger, LightningWandbLogger):
            logger.log_image(key, [str(png)], step=iteration)
        elif isinstance(logger, LightningMLFlowLogger):
            logger.experiment.log_artifact(logger.run_id, str(png), artifact_path=key)


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


# --- Loggers -----------------------------------------------------------------


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` that appends to an existing ``metrics.csv`` instead of deleting it.

    Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when it starts
    (``lightning_internals.AppendingExperimentWriter``), so resuming into the same run
    directory would erase the logs of everything before the interruption.
    """

    @property
    def experiment(self) -> ExperimentWriter:
        if logger_run(self) is None and getattr(rank_zero_only, "rank", 0) == 0:
            logger_filesystem(self).makedirs(self.root_dir, exist_ok=True)
            set_logger_run(self, AppendingExperimentWriter(log_dir=self.log_dir))
        return super().experiment


#: Where a run directory remembers its trackers' run ids, so a resume continues them.
TRACKER_RUNS = "tracker_runs.json"


def remembered_run_id(run_dir: str | Path, tracker: str) -> str | None:
    """The id of the ``tracker`` run this run directory logged to before, if any."""
    path = Path(run_dir) / TRACKER_RUNS
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get(tracker)


def remember_run_id(run_dir: str | Path, tracker: str, run_id: str) -> None:
    path = Path(run_dir) / TRACKER_RUNS
    ids = json.loads(path.read_text()) if path.is_file() else {}
    if ids.get(tracker) != run_id:
        ids[tracker] = run_id
        text = json.dumps(ids, indent=1).encode()
        write_atomically(path, lambda file: file.write(text))


def check_wandb_credentials(offline: bool) -> None:
    """Refuse an online W&B run without an API key, before anything trains.

    Without one, wandb raises ``UsageError: No API key configured`` only when the
    run starts (after the data is loaded), with a traceback. The key is where
    ``wandb login`` puts it (``~/.netrc``) or in ``WANDB_API_KEY``.
    """
    mode = os.environ.get("WANDB_MODE", "").lower()
    if offline or mode in ("offline", "disabled", "dryrun") or os.environ.get("WANDB_API_KEY"):
        return
    base_url = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    host = urllib.parse.urlparse(base_url).hostname or "api.wandb.ai"
    try:
        if netrc.netrc().authenticators(host):
            return
    except (OSError, netrc.NetrcParseError):
        pass
    raise ConfigError(
        "logger=wandb: no W&B API key is configured (no WANDB_API_KEY, no entry for "
        f"{host} in ~/.netrc); run `wandb login` once, or log offline with WANDB_MODE=offline "
        "(and `wandb sync <run dir>/wandb/offline-run-*` later), or choose another logger"
    )


def check_tracking_server(uri: str | None, timeout: float = 5.0) -> None:
    """Refuse an MLflow tracking server that does not answer, before anything trains.

    MLflow's client retries a refused connection again and again (urllib3
    ``Retrying ...``) before it gives up; one plain connection attempt says at once.
    """
    if not uri or not uri.startswith(("http://", "https://")):
        return  # a file or database store: MLflow creates it
    address = urllib.parse.urlparse(uri)
    port = address.port or (443 if address.scheme == "https" else 80)
    try:
        socket.create_connection((address.hostname, port), timeout=timeout).close()
    except OSError as error:
        raise ConfigError(
            f"logger.mlflow.tracking_uri={uri}: the tracking server does not answer "
            f"({error.strerror or error}); start it, fix the address (or MLFLOW_TRACKING_URI), "
            "or use the local store (leave tracking_uri unset)"
        ) from None


class WandbLogger(LightningWandbLogger):
    """Lightning's ``WandbLogger``, one W&B run per run directory, on the iteration axis.

    - ``ckpt_path=last`` in the same run directory continues the same W&B run
      (``resume="allow"`` with the id this directory used before);
    - charts use ``iteration`` as their x axis (Lightning's calls it
      ``trainer/global_step``, which in this template would be misleading:
      ``global_step`` counts every optimizer step);
    - the W&B run is finished when training ends, so the next job of a
      multirun, in the same process, starts its own run instead of
      appending to this one (Lightning leaves it to the end of the process).
    """

    #: The package this logger needs, checked when the config is validated.
    requires = ("wandb", "wandb")

    def __init__(self, run_dir: str, **kwargs: Any) -> None:
        check_wandb_credentials(offline=bool(kwargs.get("offline", False)))
        self._run_dir = run_dir
        kwargs.setdefault("id", remembered_run_id(run_dir, "wandb") or uuid.uuid4().hex[:12])
        kwargs.setdefault("resume", "allow")
        super().__init__(save_dir=run_dir, **kwargs)

    @property
    def experiment(self) -> Any:
        created = logger_run(self) is None
        run = super().experiment
        if created and logger_run(self) is not None:
            run.define_metric("iteration")
            run.define_metric("*", step_metric="iteration", step_sync=True)
            remember_run_id(self._run_dir, "wandb", run.id)
        return run

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if step is None:
            super().log_metrics(metrics)
        else:
            prefixed = add_prefix(metrics, logger_prefix(self), self.LOGGER_JOIN_CHAR)
            self.experiment.log({**prefixed, "iteration": step})

    @rank_zero_only
    def finalize(self, status: str) -> None:
        super().finalize(status)
        run = logger_run(self)
        if run is not None:
            run.finish(exit_code=0 if status == "success" else 1)
            set_logger_run(self, None)


class MLFlowLogger(LightningMLFlowLogger):
    """Lightning's ``MLFlowLogger``, one MLflow run per run directory.

    ``ckpt_path=last`` in the same run directory continues the same MLflow run
    (metrics append to its history). MLflow parameters cannot change once
    logged, so a resumed run logs only new keys; the settings that changed are
    in the run's log (``train.check_resume``).
    """

    requires = ("mlflow", "mlflow")

    def __init__(self, run_dir: str, **kwargs: Any) -> None:
        check_tracking_server(kwargs.get("tracking_uri"))
        self._run_dir = run_dir
        self._resumed_run = remembered_run_id(run_dir, "mlflow")
        super().__init__(run_id=self._resumed_run, **kwargs)

    @property
    def experiment(self) -> Any:
        created = mlflow_run_id(self) is None
        client = super().experiment
        run_id = mlflow_run_id(self)
        if created and run_id is not None:
            remember_run_id(self._run_dir, "mlflow", run_id)
            if self._resumed_run is not None:
                client.update_run(run_id, status="RUNNING")
        return client

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        if self._resumed_run is None:
            return super().log_hyperparams(params)
        logged = self.experiment.get_run(self._resumed_run).data.params
        new = {key: value for key, value in flatten_params(params).items() if key not in logged}
        if new:
            super().log_hyperparams(new)

"""Multiruns: a summary of every job's final metrics, the objective for sweepers, DDP per job.

``python -m gan_template -m seed=0,1,2`` runs one job per value, each in
``<sweep dir>/<job number>/``. At the end :class:`SweepSummary` writes
``<sweep dir>/summary.csv`` (one row per job: its overrides and the final
metrics of its ``final_metrics.json``) and prints it.

DDP inside a multirun: Lightning starts the other ranks by re-running the
command line (its Hydra-aware subprocess launcher), which for ``-m`` starts the whole
sweep again in a second sweep folder, and only works because that second
sweep happens to walk the jobs in the same order. Here every job starts its own
ranks instead: the job writes its overrides and directory to an environment
variable that the ranks inherit (:func:`ranks_run_this_job`), and a rank that
finds it runs exactly that job, in that job's directory
(:func:`become_the_parent_job`). One sweep, one folder.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from gan_template.harness.errors import ConfigError

log = logging.getLogger(__name__)

#: Written by a search (optuna_search.py) into each trial's job folder: number, state, value.
TRIAL_FILE = "optuna_trial.json"

#: Read by the DDP ranks a job starts; the name follows the package (renamed with it).
JOB_ENVIRONMENT = f"{__package__.upper()}_SWEEP_JOB"
#: What Lightning's launcher adds to the launching process's environment.
_LAUNCH_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def objective(final_metrics: Mapping[str, float], name: str) -> float:
    """The value a sweeper optimizes (``optimized_metric``), or an error naming those available."""
    if name not in final_metrics:
        available = ", ".join(sorted(k for k in final_metrics if k != "iteration")) or "none"
        raise ConfigError(
            f"optimized_metric={name} was not measured by this run (its final metrics: "
            f"{available}); name one of those, or enable the evaluation that measures it "
            "(callbacks=toy for toy/*, callbacks=images for image/*, callbacks=translation for "
            "val/* of the image-to-image tasks)"
        )
    return float(final_metrics[name])


@contextmanager
def ranks_run_this_job(overrides: list[str], run_dir: Path) -> Iterator[None]:
    """During a multirun job: DDP ranks started now run this job; the next job starts its own.

    Lightning's launcher leaves ``LOCAL_RANK`` and the rest in this process's
    environment, and its process group open; the next ``fit`` would take them
    as a sign that its ranks were started by someone else and talk to ranks
    that have exited. Both are undone afterwards.
    """
    saved = {name: os.environ.get(name) for name in (*_LAUNCH_VARIABLES, JOB_ENVIRONMENT)}
    os.environ[JOB_ENVIRONMENT] = json.dumps({"overrides": overrides, "run_dir": str(run_dir)})
    try:
        yield
    finally:
        import torch.distributed  # here, not at start-up: `--help` imports this module

        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def become_the_parent_job(argv: list[str]) -> list[str]:
    """In a DDP rank started by a multirun job: that job's command line; otherwise ``argv``."""
    job = os.environ.get(JOB_ENVIRONMENT)
    if job is None or "LOCAL_RANK" not in os.environ:
        return argv
    parent = json.loads(job)
    return [
        argv[0],
        *parent["overrides"],
        f"hydra.run.dir={parent['run_dir']}",
        "hydra.output_subdir=null",  # the job wrote its .hydra/ already
        f"hydra.job.name=train_ddp_process_{os.environ['LOCAL_RANK']}",
    ]


class SweepSummary(Callback):
    """At the end of a multirun: ``<sweep dir>/summary.csv``, one row per job, and a printed table.

    Columns: the job number, each override (the printed table keeps only those
    that differ between jobs), the status and the final metrics.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        write_summary(Path(config.hydra.sweep.dir))


def write_summary(sweep_dir: Path) -> None:
    """``<sweep dir>/summary.csv`` of the jobs so far, and the printed table.

    Called at the end of a multirun, and by a job that stops the sweep (a
    refused config exits the process, so Hydra's end of multirun never comes):
    its row then says ``failed or unfinished``.
    """
    rows = summarize(sweep_dir)
    if not rows:
        return
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(sweep_dir / "summary.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    varying = [c for c in columns if len({str(row.get(c)) for row in rows}) > 1 or c == "job"]
    log.info(f"Sweep summary ({sweep_dir / 'summary.csv'}):\n{as_table(rows, varying)}")


def summarize(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job folder of ``sweep_dir``: job, overrides, status and final metrics."""
    from gan_template.callbacks.periodic import FINAL_METRICS  # not at start-up: imports Lightning

    rows = []
    jobs = [p.parent.parent for p in sweep_dir.glob("*/.hydra/overrides.yaml")]
    for job_dir in sorted(jobs, key=lambda p: (len(p.name), p.name)):
        row: dict[str, Any] = {"job": job_dir.name}
        for override in OmegaConf.load(job_dir / ".hydra" / "overrides.yaml"):
            key, _, value = str(override).partition("=")
            row[key] = value
        final, trial = job_dir / FINAL_METRICS, job_dir / TRIAL_FILE
        if final.is_file():
            row["status"] = "done"
            row.update(json.loads(final.read_text()))
        elif trial.is_file() and json.loads(trial.read_text())["state"] == "PRUNED":
            row["status"] = "pruned"
        else:
            row["status"] = "failed or unfinished"
        rows.append(row)
    return rows


def as_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def cell(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    cells = [[cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = [columns, *cells]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)) for line in lines
    )

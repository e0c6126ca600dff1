"""The SLURM path through Hydra's submitit launcher, with submitit's local executor.

``hydra/launcher=submitit_local`` runs the job as ``hydra/launcher=slurm`` does
on a cluster, minus the queue: submitit's job process, its signal handlers and
its requeue. Before a time limit submitit sends USR2 (``signal_delay_s``
early); the run stops, saves, hands the signal to submitit, which requeues the
job, and the requeued job resumes with ``ckpt_path=auto`` (``stopping.py``).
Marked slow (about a minute); CI runs it.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

pytestmark = pytest.mark.slow

ITERATIONS = 4000


def submitit_tasks(sweep_dir: Path) -> list[int]:
    """PIDs of the submitit job processes (``submitit.core._submit``) of this sweep."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"submitit.core._submit" in command and str(sweep_dir).encode() in b" ".join(
                command
            ):
                pids.append(int(entry.name))
    return pids


def wait_for(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the job process through /proc")
def test_preempted_submitit_job_saves_is_requeued_and_resumes(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    command = [
        sys.executable, "-m", "gan_template", "-m", "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10", f"hydra.sweep.dir={sweep}",
        "experiment=ring", f"train.iterations={ITERATIONS}", "ckpt_path=auto",
        "trainer.enable_progress_bar=false", "callbacks.toy_eval.every_n_iterations=0",
        "trainer.log_every_n_steps=50",
    ]  # fmt: skip
    sweeper = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        metrics = sweep / "0" / "metrics.csv"
        wait_for(
            lambda: metrics.is_file() and "train/g_loss" in metrics.read_text(), 180, "a log row"
        )
        [task] = submitit_tasks(sweep)
        os.kill(task, signal.SIGUSR2)  # what submitit sends signal_delay_s before the limit
        output, _ = sweeper.communicate(timeout=300)
    finally:
        if sweeper.poll() is None:
            sweeper.kill()
    assert sweeper.returncode == 0, output[-3000:]

    logs = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.*"))
    stopped = [line for line in logs.splitlines() if "stopped by SIGUSR2 after iteration" in line]
    assert len(stopped) == 1, logs[-3000:]
    at = int(stopped[0].split("after iteration ")[1].split()[0])
    assert 0 < at < ITERATIONS
    assert "Requeued job" in logs  # submitit's handler ran after the save
    assert "Restored all states from the checkpoint" in logs  # the requeued job resumed

    final = json.loads((sweep / "0" / "final_metrics.json").read_text())
    assert final["iteration"] == ITERATIONS
    with open(metrics) as file:  # one log row per 50 iterations across both slices
        steps = [int(row["step"]) for row in csv.DictReader(file) if row.get("train/g_loss")]
    assert steps == list(range(50, ITERATIONS + 1, 50))

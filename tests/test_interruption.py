"""SIGTERM (what schedulers send before a kill) and Ctrl-C leave a checkpoint the run resumes from."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

COMMON = [
    "experiment=ring",
    "trainer.enable_progress_bar=false",
    "callbacks.toy_eval.every_n_iterations=0",
]


def interrupt_once_training(run_dir: Path, cwd: Path, sig: signal.Signals) -> tuple[str, int]:
    """Start an endless run, send ``sig`` once it has logged; its output and exit status."""
    process = subprocess.Popen(
        [sys.executable, "-m", "gan_template", *COMMON, "train.iterations=1000000", f"hydra.run.dir={run_dir}"],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # As in a terminal: a shell that started the tests in the background (`cmd &`)
        # ignores SIGINT, the child would inherit that, and Python would then ignore Ctrl-C.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        metrics = run_dir / "metrics.csv"
        deadline = time.monotonic() + 120
        while not (metrics.exists() and metrics.stat().st_size > 0):  # training is under way
            assert process.poll() is None and time.monotonic() < deadline, "the run did not start"
            time.sleep(0.2)
        process.send_signal(sig)
        output, _ = process.communicate(timeout=120)
    finally:
        process.kill()  # never leave a million-iteration run behind
    return output, process.returncode


def test_sigterm_saves_a_resumable_checkpoint_and_says_how_to_resume(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    output, status = interrupt_once_training(run_dir, tmp_path, signal.SIGTERM)
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file(), output[-3000:]
    assert status == 143 and "Traceback" not in output, output[-3000:]  # unfinished: not 0
    stopped_at = torch.load(checkpoint, weights_only=False)["gan_template"]["iteration"]
    assert 0 < stopped_at < 1000000
    assert f"stopped by SIGTERM after iteration {stopped_at} of 1000000" in output
    assert f"Resume with the same overrides plus ckpt_path={checkpoint}" in output
    assert not (run_dir / "final_metrics.json").exists()  # no end-of-run evaluation

    resumed = tmp_path / "resumed"
    completed = subprocess.run(
        [sys.executable, "-m", "gan_template", *COMMON, f"train.iterations={stopped_at + 25}",
         f"ckpt_path={checkpoint}", f"hydra.run.dir={resumed}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert json.loads((resumed / "final_metrics.json").read_text())["iteration"] == stopped_at + 25


def test_ctrl_c_saves_a_resumable_checkpoint(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    output, _ = interrupt_once_training(run_dir, tmp_path, signal.SIGINT)
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file(), output[-3000:]
    assert "KeyboardInterrupt: saved a resumable checkpoint" in output
    assert torch.load(checkpoint, weights_only=False)["gan_template"]["iteration"] > 0


def test_submitits_preemption_signal_is_noted_then_handed_to_the_handler_it_replaced(
    monkeypatch,  # type: ignore[no-untyped-def]
) -> None:
    import os

    from gan_template.harness.stopping import StopSignal, stop_signals

    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    assert stop_signals() == (signal.SIGTERM,)  # outside a submitit job: SIGTERM alone
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    received: list[int] = []
    before = signal.signal(signal.SIGUSR2, lambda signum, frame: received.append(signum))
    try:
        stop = StopSignal()
        assert stop.signals == (signal.SIGTERM, signal.SIGUSR2)
        assert stop.install()
        os.kill(os.getpid(), signal.SIGUSR2)
        assert stop.received and stop.note() == [0.0, 1.0]
        assert received == []  # inside the handler: only noted
        assert stop.agreed([0.0, 2.0]) == "SIGUSR2"  # summed over two ranks
        assert stop.agreed([1.0, 0.0]) == "SIGTERM"
        stop.uninstall()
        assert signal.getsignal(signal.SIGUSR2) is not stop._handle
        stop.hand_over("SIGTERM")  # never handed over: the run's exit is its meaning
        assert received == []
        stop.hand_over("SIGUSR2")  # after the save: submitit's handler requeues
        stop.hand_over("SIGUSR2")
        assert received == [signal.SIGUSR2]  # once
    finally:
        signal.signal(signal.SIGUSR2, before)


def test_sigterm_to_the_whole_process_group_with_loader_workers_still_saves(tmp_path: Path) -> None:
    """SLURM's scancel and time limit signal every process of the job, loader workers too.

    A worker that dies of the signal before the main process has saved makes the
    DataLoader raise ("worker killed by signal") and the run would end with no
    checkpoint; the workers leave the stop signal to the main process instead.
    """
    images = tmp_path / "images" / "all"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(64):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(images / f"{i}.png")
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "gan_template", "data=folder", f"data.root={images.parent}", "data.resolution=8",
         "data.num_workers=2", "data.batch_size=8", "callbacks=default", "train.iterations=1000000",
         "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # a process group of its own, as a batch job has
    )  # fmt: skip
    try:
        metrics = run_dir / "metrics.csv"
        deadline = time.monotonic() + 120
        while not (metrics.exists() and metrics.stat().st_size > 0):
            assert process.poll() is None and time.monotonic() < deadline, "the run did not start"
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGTERM)  # the main process and both workers
        output, _ = process.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    assert process.returncode == 143, output[-3000:]
    assert "killed by signal" not in output and "Traceback" not in output, output[-3000:]
    assert torch.load(checkpoint, weights_only=False)["gan_template"]["iteration"] > 0

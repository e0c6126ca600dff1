"""Checkpoint files survive kills and full disks, and a damaged one is named with its fix."""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import lightning as L
import pytest
import torch
from helpers import run

from gan_template.callbacks.periodic import EveryNIterations
from gan_template.harness.checkpoint_io import (
    CheckpointWriteError,
    DamagedCheckpointError,
    check_readable,
    write_atomically,
)
from gan_template.module import GANModule

# Saves dominate these runs: ~10 MB checkpoints after every iteration of a cheap toy step.
SAVING_ALL_THE_TIME = [
    "experiment=ring",
    "model.generator.hidden_dim=512",
    "model.discriminator.hidden_dim=512",
    "callbacks.checkpoint.every_n_iterations=1",
    "callbacks.checkpoint.keep_last_n=2",
    "callbacks.toy_eval.every_n_iterations=0",
    "trainer.enable_progress_bar=false",
]


def gan_template(run_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "gan_template", *SAVING_ALL_THE_TIME, *overrides,
            f"hydra.run.dir={run_dir}"]  # fmt: skip


@pytest.mark.slow  # a study: 4 kills at random moments, about 40 s
def test_kills_at_random_moments_of_saving_never_leave_an_unloadable_checkpoint(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    checkpoints = run_dir / "checkpoints"
    rng = random.Random(0)
    for attempt in range(4):
        resume = ["ckpt_path=last"] if attempt else []
        process = subprocess.Popen(
            gan_template(run_dir, "train.iterations=1000000", *resume),
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            started = {p.name for p in checkpoints.glob("iter*.ckpt")}
            while len({p.name for p in checkpoints.glob("iter*.ckpt")} - started) < 2:
                assert process.poll() is None, process.communicate()[1][-3000:]
                assert time.monotonic() < deadline, "no checkpoints were written"
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 1.0))
            process.send_signal(signal.SIGKILL)
            process.communicate(timeout=60)
        finally:
            process.kill()
        for path in [checkpoints / "last.ckpt", *checkpoints.glob("iter*.ckpt")]:
            state = torch.load(path, weights_only=False, map_location="cpu")
            assert state["gan_template"]["iteration"] > 0, path
        numbered = sorted(checkpoints.glob("iter*.ckpt"))
        assert len(numbered) <= 2 + 1, numbered  # keep_last_n, plus one a kill may leave

    # The killed run finishes from last.ckpt, and a resume leaks no numbered files.
    stopped_at = torch.load(checkpoints / "last.ckpt", weights_only=False)["gan_template"]
    finish = stopped_at["iteration"] + 3
    completed = subprocess.run(
        gan_template(run_dir, f"train.iterations={finish}", "ckpt_path=last"),
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert (
        torch.load(checkpoints / "last.ckpt", weights_only=False)["gan_template"]["iteration"]
        == finish
    )
    assert len(list(checkpoints.glob("iter*.ckpt"))) == 2
    assert not list(checkpoints.glob(".*.tmp"))  # leftovers of killed saves are cleared


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path: Path) -> None:
    target = tmp_path / "checkpoints" / "last.ckpt"
    intact = tmp_path / "checkpoints" / "iter0000010.ckpt"
    write_atomically(target, lambda file: torch.save({"iteration": 10}, file))
    write_atomically(intact, lambda file: torch.save({"iteration": 10}, file))

    def disk_fills_up(file: IO[bytes]) -> None:
        file.write(b"x" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(CheckpointWriteError) as raised:
        write_atomically(target, disk_fills_up)
    message = str(raised.value)
    assert "No space left on device" in message and str(target) in message
    assert f"ckpt_path={intact}" in message
    assert torch.load(target)["iteration"] == 10  # the old file, untouched
    assert sorted(p.name for p in target.parent.iterdir()) == ["iter0000010.ckpt", "last.ckpt"]


@pytest.mark.parametrize("damage", ["half", "random bytes", "empty"])
def test_a_damaged_checkpoint_is_named_with_the_newest_intact_one(
    tmp_path: Path, damage: str
) -> None:
    folder = tmp_path / "checkpoints"
    for iteration in (10, 20):
        write_atomically(
            folder / f"iter{iteration:07d}.ckpt", lambda f: torch.save({"w": torch.ones(1000)}, f)
        )
    whole = (folder / "iter0000020.ckpt").read_bytes()
    content = {
        "half": whole[: len(whole) // 2],
        "random bytes": random.Random(0).randbytes(len(whole)),
        "empty": b"",
    }[damage]
    (folder / "last.ckpt").write_bytes(content)
    with pytest.raises(DamagedCheckpointError) as raised:
        check_readable(folder / "last.ckpt")
    message = str(raised.value)
    assert f"{folder / 'last.ckpt'} is damaged" in message
    assert f"ckpt_path={folder / 'iter0000020.ckpt'}" in message
    check_readable(folder / "iter0000020.ckpt")  # an intact one passes


def test_resuming_from_a_damaged_last_ckpt_says_which_checkpoint_to_use(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = subprocess.run(
        gan_template(run_dir, "train.iterations=4", "model.generator.hidden_dim=16",
                     "model.discriminator.hidden_dim=16"),
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    resumed = subprocess.run(
        gan_template(run_dir, "train.iterations=8", "ckpt_path=last"),
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 2
    assert "Traceback" not in resumed.stderr
    assert f"{last} is damaged" in resumed.stderr
    assert f"ckpt_path={run_dir / 'checkpoints' / 'iter0000004.ckpt'}" in resumed.stderr
    # The command that started the run is kept beside the resuming one's (run_lock.py).
    assert (
        "train.iterations=4"
        in (run_dir / ".hydra" / "earlier" / "1" / "overrides.yaml").read_text()
    )
    assert "train.iterations=8" in (run_dir / ".hydra" / "overrides.yaml").read_text()


class FillsUpAfter:
    """A file whose disk fills up after ``room`` bytes (write raises ENOSPC, as the OS does)."""

    def __init__(self, file: IO[bytes], room: int) -> None:
        self.file, self.room = file, room

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.file.write(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self.file, name)

    def __enter__(self) -> FillsUpAfter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.file.close()


def test_a_full_disk_under_torch_save_is_reported_as_the_write_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch.save turns the OSError into "RuntimeError: [enforce fail ...]"; the message names the disk."""
    import gan_template.harness.checkpoint_io as checkpoint_io

    target = tmp_path / "last.ckpt"
    write_atomically(target, lambda file: torch.save({"iteration": 10}, file))
    real_fdopen = os.fdopen
    monkeypatch.setattr(
        checkpoint_io.os, "fdopen", lambda *a, **k: FillsUpAfter(real_fdopen(*a, **k), 5000)
    )
    with pytest.raises(CheckpointWriteError, match="No space left on device"):
        write_atomically(target, lambda file: torch.save({"weights": torch.zeros(100_000)}, file))
    monkeypatch.undo()
    assert torch.load(target)["iteration"] == 10
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def on_a_small_disk(tmp_path: Path, size: str, *overrides: str) -> subprocess.CompletedProcess:
    """The command with its run directory on a real file system of ``size`` (a tmpfs).

    Where one can be mounted (root on Linux); elsewhere the test is skipped.
    """
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)],
                             capture_output=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        return subprocess.run(
            [sys.executable, "-m", "gan_template", "callbacks.image_eval.every_n_iterations=0",
             "trainer.enable_progress_bar=false", *overrides, f"hydra.run.dir={disk / 'run'}"],
            cwd=tmp_path, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_a_run_on_a_full_disk_exits_4_with_the_message(tmp_path: Path) -> None:
    completed = on_a_small_disk(tmp_path, "3m", "train.iterations=3")
    assert completed.returncode == 4, completed.stderr[-3000:]
    assert "gan_template: error: could not write the checkpoint" in completed.stderr
    assert "No space left on device" in completed.stderr
    assert "Traceback" not in completed.stderr


class FailingEvaluation(EveryNIterations):
    """An evaluation that fails when it runs (a setting only it uses, a bug in user code)."""

    def run(self, trainer: L.Trainer, pl_module: GANModule) -> None:
        raise RuntimeError("the evaluation failed")


@pytest.mark.parametrize("iterations", [10, 12], ids=["numbered", "final"])
def test_a_failing_evaluation_costs_no_training_its_iteration_checkpoint_is_written_first(
    make_config, tmp_path: Path, iterations: int
) -> None:
    cfg = make_config(
        "experiment=ring",
        f"train.iterations={iterations}",
        "callbacks.checkpoint.every_n_iterations=10",
        "callbacks.toy_eval.every_n_iterations=0",
    )
    with pytest.raises(RuntimeError, match="the evaluation failed"):
        run(cfg, FailingEvaluation(every_n_iterations=10))
    checkpoints = tmp_path / "run" / "checkpoints"
    saved = torch.load(checkpoints / "last.ckpt", weights_only=False)
    assert saved["gan_template"]["iteration"] == 10  # the iteration whose evaluation failed
    assert (checkpoints / "iter0000010.ckpt").is_file()


def test_last_ckpt_records_the_final_evaluation_so_a_resume_does_not_run_it_again(
    make_config, tmp_path: Path
) -> None:
    cfg = make_config(
        "experiment=ring", "train.iterations=10", "callbacks.toy_eval.every_n_iterations=5"
    )
    run(cfg)
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    evaluation = next(v for k, v in saved["callbacks"].items() if "ToyMixtureEvaluation" in k)
    assert evaluation["last_run_iteration"] == 10 and evaluation["last_metrics"]


def test_a_disk_that_fills_up_with_logs_and_pictures_exits_4_and_keeps_the_checkpoints(
    tmp_path: Path,
) -> None:
    """metrics.csv and the sample grids fill the run's disk; the checkpoints live elsewhere."""
    checkpoints = tmp_path / "checkpoints"
    completed = on_a_small_disk(
        tmp_path, "120k", "train.iterations=40", "trainer.log_every_n_steps=1",
        "callbacks.sample_grid.every_n_iterations=10", "callbacks.checkpoint.every_n_iterations=5",
        f"+callbacks.checkpoint.dirpath={checkpoints}",
    )  # fmt: skip
    assert completed.returncode == 4, completed.stderr[-3000:]
    assert "Traceback" not in completed.stderr
    assert "(No space left on device): the disk is full" in completed.stderr
    stopped_at = int(completed.stderr.split("at iteration ")[1].split()[0])
    saved = torch.load(checkpoints / "last.ckpt", weights_only=False)["gan_template"]["iteration"]
    assert (
        saved == stopped_at
        and f"resume with ckpt_path={checkpoints / 'last.ckpt'}" in completed.stderr
    )

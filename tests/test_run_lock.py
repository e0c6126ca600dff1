"""One run per run directory: a second is refused at start; a killed run leaves no stale lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gan_template.harness.run_lock import (
    LOCK_NAME,
    RECORD_FILES,
    DirectoryLock,
    RunDirectoryInUse,
    RunDirectoryLock,
    keep_earlier_record,
)


def test_a_second_lock_on_a_directory_is_refused_naming_the_holder(tmp_path: Path) -> None:
    first = DirectoryLock(tmp_path / "run")
    first.acquire()
    with pytest.raises(RunDirectoryInUse) as refused:
        DirectoryLock(tmp_path / "run").acquire()
    assert f"process {os.getpid()}" in str(refused.value.code)
    assert "hydra.run.dir" in str(refused.value.code)
    first.release()
    again = DirectoryLock(tmp_path / "run")
    again.acquire()  # released: free again
    again.release()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from gan_template.harness.run_lock import DirectoryLock; "
            "DirectoryLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirectoryInUse, match=f"process {holder.pid} "):
            DirectoryLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock = DirectoryLock(tmp_path)
    lock.acquire()  # the lock died with its process, though the file remains
    assert (tmp_path / LOCK_NAME).exists()
    lock.release()


def test_other_ranks_of_a_run_share_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = DirectoryLock(tmp_path)
    held.acquire()
    for variable in ("LOCAL_RANK", "RANK", "SLURM_PROCID"):
        with monkeypatch.context() as env:
            env.setenv(variable, "1")
            RunDirectoryLock()._take(str(tmp_path))  # a rank of the holder's run: no refusal
    with pytest.raises(SystemExit) as refused:
        RunDirectoryLock()._take(str(tmp_path))  # rank 0 of another run
    assert refused.value.code == 2
    held.release()


def test_a_second_command_into_a_directory_in_use_exits_2_before_writing(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    held = DirectoryLock(run_dir)
    held.acquire()  # this test process stands for a first run still training
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "gan_template", "experiment=ring", f"hydra.run.dir={run_dir}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    held.release()
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"is in use by another run: process {os.getpid()}" in done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_NAME]  # no .hydra/, no logs
    assert time.monotonic() - start < 60


def test_a_run_directory_on_a_read_only_mount_is_refused_with_the_reason(tmp_path: Path) -> None:
    """A read-only file system (a tmpfs mounted ro; root ignores permission bits, not ro mounts)."""
    mount = tmp_path / "readonly"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)],
                             capture_output=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "gan_template", "experiment=ring", "train.iterations=2",
             f"hydra.run.dir={mount / 'new' / 'run'}"],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)
    assert done.returncode == 2, done.stderr[-3000:]
    assert (
        f"cannot write the run directory {mount / 'new' / 'run'} (Read-only file system)"
        in done.stderr
    )
    assert "Traceback" not in done.stderr


def test_a_fresh_start_over_a_finished_run_is_refused_before_hydra_writes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"a finished run's checkpoint")
    record = {name: f"the first command's {name}\n" for name in RECORD_FILES}
    for name, text in record.items():
        (run_dir / ".hydra" / name).write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "gan_template", "experiment=ring", f"hydra.run.dir={run_dir}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "already holds a run" in done.stderr and "ckpt_path=last" in done.stderr
    assert "Traceback" not in done.stderr
    assert {p.name: p.read_text() for p in (run_dir / ".hydra").iterdir()} == record


def test_each_earlier_record_is_kept_numbered(tmp_path: Path) -> None:
    hydra_dir = tmp_path / ".hydra"
    assert keep_earlier_record(hydra_dir) is None  # a new run: nothing to keep
    for command in ("first", "second"):
        hydra_dir.mkdir(exist_ok=True)
        for name in RECORD_FILES:
            (hydra_dir / name).write_text(command)
        keep_earlier_record(hydra_dir)
    for number, command in ((1, "first"), (2, "second")):
        kept = hydra_dir / "earlier" / str(number)
        assert {p.name: p.read_text() for p in kept.iterdir()} == dict.fromkeys(
            RECORD_FILES, command
        )
    assert not (hydra_dir / "config.yaml").exists()

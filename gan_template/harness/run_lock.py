"""One run per run directory: a second run started into a directory in use is refused.

Two runs in one directory write the same ``last.ckpt``, numbered checkpoints and
``metrics.csv`` (whose header then no longer fits either's rows), and the
second overwrites the first's ``.hydra/`` record. :class:`RunDirectoryLock` (a
Hydra callback, ``conf/hydra/default.yaml``) takes an exclusive lock on
``<run dir>/.gan_template.lock`` before Hydra writes anything there, and a run
that cannot take it stops with exit status 2, naming the process that holds it.

Before Hydra writes this command's record (``.hydra/*.yaml``) into the
directory, the earlier command's is moved to ``.hydra/earlier/<n>/`` (a resumed
run keeps how it was started), and a fresh start into a directory that holds a
run's ``last.ckpt`` is refused with nothing written (train.py's refusal comes
after Hydra's write).

The lock is an ``flock`` on an open file, so the operating system drops it when
its process ends in any way (a crash, SIGKILL, a lost node): a killed run
leaves no stale lock, and resuming into its directory just works. The file
keeps the holder's process id, host and command, for the message only.

Only the run's first process takes it. The other ranks of one run (Lightning's
DDP ranks, ``torchrun`` workers, SLURM tasks) carry a rank other than 0 in
their environment and share the directory. In a multirun each job locks its
own directory while it runs, not the sweep's: the workers of one Optuna study
share a sweep folder (optuna_search.py), each trial in a folder of its own. Where
``fcntl`` is missing (Windows) nothing is locked.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from gan_template.harness.errors import UserInputError

LOCK_NAME = ".gan_template.lock"

#: Where launchers put a process's rank (Lightning's order: ``rank_zero_only``'s ``_get_rank``).
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


class RunDirectoryInUse(SystemExit):
    """Raised (as an exit with status 2 and its message printed) when another run holds the lock."""


def launch_rank() -> int:
    """This process's rank from its launcher's environment; 0 without one."""
    for name in RANK_VARIABLES:
        value = os.environ.get(name)
        if value is not None and value.strip().isdigit():
            return int(value)
    return 0


class DirectoryLock:
    """An exclusive, non-blocking lock on ``directory``, held until :meth:`release` or exit."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`RunDirectoryInUse` naming its holder."""
        try:
            import fcntl
        except ImportError:  # Windows: no flock
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:  # a read-only mount, no permission: the run could save nothing
            raise RunDirectoryInUse(
                f"gan_template: error: cannot write the run directory {self.directory} "
                f"({error.strerror}): the run could save no checkpoint, log or picture. Give it a "
                "directory it can write (hydra.run.dir=..., or hydra.sweep.dir=... for -m)"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = self._read_holder(fd)
            os.close(fd)
            raise RunDirectoryInUse(self._refusal(holder)) from None
        os.ftruncate(fd, 0)
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv),
        }
        os.write(fd, json.dumps(record).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays, unlocked
            self._fd = None

    @staticmethod
    def _read_holder(fd: int) -> dict[str, Any]:
        try:
            return dict(json.loads(os.pread(fd, 65536, 0).decode() or "{}"))
        except (OSError, ValueError):
            return {}

    def _refusal(self, holder: dict[str, Any]) -> str:
        who = f"process {holder.get('pid', '?')} on {holder.get('host', '?')}"
        if holder.get("started"):
            who += f", started {holder['started']}"
        if holder.get("command"):
            who += f" ({holder['command']})"
        return (
            f"gan_template: error: the run directory {self.directory} is in use by another run: "
            f"{who}. Two runs in one directory would overwrite each other's checkpoints and "
            "metrics.csv. Give this run a directory of its own (hydra.run.dir=...), or wait "
            "for that run to end (then ckpt_path=last resumes it)"
        )


#: The files of a command's record that Hydra writes into ``<run dir>/.hydra/``.
RECORD_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")


def keep_earlier_record(hydra_dir: Path) -> Path | None:
    """Move an earlier command's record out of the way of this one's: ``.hydra/earlier/<n>/``.

    A resumed run (``ckpt_path=last``, a requeued job) gets its command's
    config, Hydra config and overrides written over those of the command that
    started it; each earlier record is kept, numbered in the order of the
    commands. Returns where it went (None: no earlier record).
    """
    present = [hydra_dir / name for name in RECORD_FILES if (hydra_dir / name).is_file()]
    if not present:
        return None
    number = 1
    while (hydra_dir / "earlier" / str(number)).exists():
        number += 1
    kept = hydra_dir / "earlier" / str(number)
    kept.mkdir(parents=True)
    for path in present:
        path.rename(kept / path.name)
    return kept


class RunDirectoryLock(Callback):
    """Hydra callback: hold the run's (or the sweep's) directory for the whole command."""

    def __init__(self) -> None:
        self._lock: DirectoryLock | None = None

    def _take(self, directory: str) -> None:
        if launch_rank() != 0:
            return  # a rank of a run whose first process holds the lock
        lock = DirectoryLock(Path(directory))
        try:
            lock.acquire()
        except RunDirectoryInUse as refused:
            print(refused.code, file=sys.stderr, flush=True)
            raise RunDirectoryInUse(2) from None
        self._lock = lock

    def _drop(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        HydraConfig.instance().set_config(config)  # as run_job does: ${hydra:...} resolves
        self._take(config.hydra.run.dir)
        if launch_rank() != 0 or config.hydra.output_subdir is None:
            return
        # Hydra writes this command's record (.hydra/*.yaml) next, over the one of the
        # command that made the run: refuse a fresh start over a run first (train.py
        # refuses it too, but only after that write), and keep the earlier record.
        run_dir = Path(config.hydra.run.dir)
        if config.get("ckpt_path") is None and (run_dir / "checkpoints" / "last.ckpt").is_file():
            from gan_template.harness.train import resolve_checkpoint

            try:
                resolve_checkpoint(None, run_dir)
            except UserInputError as refused:
                print(f"gan_template: error: {refused}", file=sys.stderr, flush=True)
                raise SystemExit(2) from None
        keep_earlier_record(run_dir / config.hydra.output_subdir)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._drop()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:  # a single run took its directory above
            self._take(config.hydra.runtime.output_dir)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:
            self._drop()

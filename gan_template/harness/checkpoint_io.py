"""Checkpoint files: written atomically, and checked when read back.

A checkpoint is first written to a temporary file in the same folder, flushed
and fsynced, then renamed over its target; a rename within one filesystem is
atomic, so a kill or a power cut leaves either the old file or the new one,
never half of one. Lightning's own save writes through fsspec, whose local
"transaction" writes to the system temp folder and moves the file: a plain,
interruptible copy when the run folder is on another filesystem. A failed
write (a full disk) removes its temporary file and raises
:class:`CheckpointWriteError`, which names what is still intact.

Reading: :func:`check_readable` turns torch's messages for a damaged file
(truncated zip, random bytes, empty file) into one line that names the file
and the newest intact checkpoint beside it.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from gan_template.harness.errors import CheckpointWriteError, DamagedCheckpointError


def write_atomically(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write ``path`` through a temporary file in its folder: fsync, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
    )
    file = None
    try:
        with os.fdopen(descriptor, "wb") as raw:
            file = _RecordingFile(raw)
            write(file)  # type: ignore[arg-type]  # a file object in all but name
            file.flush()
            os.fsync(raw.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if file is not None and file.error is not None and not isinstance(error, OSError):
            # torch.save turns a failed write (a full disk) into "RuntimeError: [enforce
            # fail at inline_container.cc]" and drops the OSError: report the OSError.
            error = file.error
        if isinstance(error, OSError) and not isinstance(error, CheckpointWriteError):
            intact = newest_intact(path.parent, excluding=None)
            raise CheckpointWriteError(
                f"could not write the checkpoint {path} ({error.strerror or error}); nothing was "
                f"half-written, and the earlier checkpoints are intact"
                + (f" (newest: {intact})" if intact else "")
                + ". Free space (or fix the folder's permissions) and resume with "
                f"ckpt_path={intact or '<a checkpoint>'}"
            ) from error
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


class _RecordingFile:
    """A binary file that remembers the first ``OSError`` its writes raised."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self._file.write(data)
        except OSError as error:
            self.error = self.error or error
            raise

    def flush(self) -> None:
        try:
            self._file.flush()
        except OSError as error:
            self.error = self.error or error
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def copy_atomically(source: Path, target: Path) -> None:
    """``target`` becomes a copy of ``source``, never a partial one."""
    with source.open("rb") as original:
        write_atomically(target, lambda file: _copy(original, file))


def _copy(source: IO[bytes], target: IO[bytes], chunk: int = 1 << 22) -> None:
    while block := source.read(chunk):
        target.write(block)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``torch.save`` checkpoint IO, writing through :func:`write_atomically`."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(
                f"{type(self).__name__} takes no storage_options, got {storage_options!r}"
            )
        write_atomically(Path(path), lambda file: torch.save(checkpoint, file))


def is_readable(path: Path) -> bool:
    """Whether ``path`` is a complete checkpoint archive (its zip directory and records read)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        return False


def newest_intact(folder: Path, excluding: Path | None) -> Path | None:
    """The newest readable ``iterNNNNNNN.ckpt`` in ``folder`` (other than ``excluding``)."""
    for candidate in sorted(folder.glob("iter*.ckpt"), reverse=True):
        if candidate != excluding and is_readable(candidate):
            return candidate
    return None


def check_readable(path: Path, option: str = "ckpt_path=") -> None:
    """Raise :class:`DamagedCheckpointError` naming ``path`` and an intact alternative.

    ``option`` is how the caller's user passes a checkpoint (``ckpt_path=`` for
    training), so the advice can be copied as it stands.
    """
    if is_readable(path):
        return
    size = path.stat().st_size
    intact = newest_intact(path.parent, excluding=path)
    advice = (
        f"use the newest intact checkpoint beside it instead: {option}{intact}"
        if intact
        else "no intact numbered checkpoint is beside it"
    )
    raise DamagedCheckpointError(
        f"{path} is damaged and cannot be loaded ({size} bytes, "
        f"{'empty' if size == 0 else 'not a complete checkpoint archive'}); {advice}"
    )

"""A scheduler's SIGTERM: every rank stops after the same iteration, saves it, and exits 143.

SLURM, Kubernetes and torchrun send SIGTERM some seconds before a kill, to
one rank or to all. Lightning 2.6's handler runs a ``dist.broadcast`` inside
the signal handler, at whatever point the rank was interrupted: a rank that
is inside the gradient all-reduce then waits for a collective the other rank
never joins, and the job hangs with no checkpoint (issue 25, point 8).

Here the handler only notes the signal (:class:`StopSignal`). The note rides,
as one more number, in the first gradient all-reduce of the next iteration,
with the skip flags (``update.py``), and is read in that iteration's one host
read. Every rank so sees the same sum after the same iteration, whichever rank
was signalled and when, and stops there: the checkpoint callback writes
``last.ckpt`` inside that batch (so a resume continues the data order), the
end-of-run evaluations are left out (the scheduler's grace period is short),
and ``python -m gan_template`` exits with status 143 (128 + SIGTERM) and says
how to resume. The time from the signal to the exit is at most two
iterations and one checkpoint write.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

#: The exit status of a run stopped by a signal (the shell's 128 + SIGTERM).
STOPPED_EXIT_STATUS = 128 + signal.SIGTERM


class StoppedBySignal(Exception):
    """The run stopped early on a signal, after saving ``last.ckpt``; the message says how to resume."""

    def __init__(self, message: str, rank: int = 0) -> None:
        super().__init__(message)
        self.rank = rank


class StopSignal:
    """Notes a SIGTERM for the training loop; does nothing else inside the handler."""

    def __init__(self, rank: int = 0) -> None:
        self.rank = rank
        self.received = False
        self._previous: object = None

    def install(self) -> bool:
        """Handle SIGTERM from now on (main thread only); whether it was installed."""
        if threading.current_thread() is not threading.main_thread():
            return False
        self._previous = signal.signal(signal.SIGTERM, self._handle)
        return True

    def uninstall(self) -> None:
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._previous)  # type: ignore[arg-type]
            self._previous = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.received:
            # os.write, not logging or print: safe whatever the interrupted code held.
            os.write(
                2,
                f"[rank {self.rank}] Received SIGTERM: every rank stops after the current "
                "iteration and saves it\n".encode(),
            )
        self.received = True

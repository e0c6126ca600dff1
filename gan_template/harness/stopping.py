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

Under a submitit job (``hydra/launcher=slurm`` or ``submitit_local``) the same
happens on submitit's preemption signal (``SUBMITIT_PREEMPT_SIGNAL``, USR2 by
default, sent ``signal_delay_s`` before the time limit): the run stops and
saves as above, and then hands the signal to the handler it replaced,
submitit's, which requeues the job. The requeued job resumes from
``last.ckpt`` when its command has ``ckpt_path=auto``.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

#: The exit status of a run stopped by a signal (the shell's 128 + SIGTERM).
STOPPED_EXIT_STATUS = 128 + signal.SIGTERM


def stop_signals() -> tuple[signal.Signals, ...]:
    """SIGTERM, and submitit's preemption signal when this process runs a submitit job."""
    signals = [signal.SIGTERM]
    if os.environ.get("SUBMITIT_EXECUTOR"):  # set by submitit in every job (slurm, local)
        name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2").upper().removeprefix("SIG")
        preempt = getattr(signal, f"SIG{name}", None)
        if isinstance(preempt, signal.Signals) and preempt not in signals:
            signals.append(preempt)
    return tuple(signals)


class StoppedBySignal(Exception):
    """The run stopped early on a signal, after saving ``last.ckpt``; the message says how to resume.

    ``hand_over`` passes the signal on to the handler that was replaced (submitit's
    requeue); call it once the message is out.
    """

    def __init__(
        self, message: str, rank: int = 0, hand_over: Callable[[], None] | None = None
    ) -> None:
        super().__init__(message)
        self.rank = rank
        self.hand_over = hand_over or (lambda: None)


class StopSignal:
    """Notes a stop signal for the training loop; does nothing else inside the handler.

    One note per signal of :func:`stop_signals` (:meth:`note`): the ranks sum
    them in the all-reduce, so every rank learns which signal stopped the run,
    whichever rank received it.
    """

    def __init__(self, rank: int = 0) -> None:
        self.rank = rank
        self.received = False
        self.signals = stop_signals()
        self._notes = [0.0] * len(self.signals)
        self._installed: dict[signal.Signals, Any] = {}  # what install() replaced, until uninstall
        self._replaced: dict[signal.Signals, Any] = {}  # the same, kept for hand_over()

    def install(self) -> bool:
        """Handle the stop signals from now on (main thread only); whether it was installed."""
        if threading.current_thread() is not threading.main_thread():
            return False
        for stop in self.signals:
            self._installed[stop] = self._replaced[stop] = signal.signal(stop, self._handle)
        return True

    def uninstall(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for stop, previous in self._installed.items():
                if previous is not None:
                    signal.signal(stop, previous)
            self._installed = {}

    def note(self) -> list[float]:
        """Per stop signal, 1.0 if this process received it (the same list object every call)."""
        return self._notes

    def agreed(self, notes: Sequence[float]) -> str:
        """The name of the signal that stopped the run, from the notes summed over ranks."""
        return next(
            (stop.name for stop, count in zip(self.signals, notes, strict=True) if count > 0),
            "a signal",
        )

    def hand_over(self, name: str) -> None:
        """Call the handler that the preemption signal ``name`` replaced (submitit's: requeue).

        Not for SIGTERM: its meaning, ending the process, is what the run does
        (exit 143), and the handler it replaced is Lightning's, whose kill of
        launched processes must not run after the save.
        """
        stop = signal.Signals.__members__.get(name)
        handler = self._replaced.pop(stop, None) if stop is not None else None
        if stop is not None and stop != signal.SIGTERM and callable(handler):
            handler(int(stop), None)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        stop = signal.Signals(signum)
        if not self.received:
            # os.write, not logging or print: safe whatever the interrupted code held.
            os.write(
                2,
                f"[rank {self.rank}] Received {stop.name}: every rank stops after the current "
                "iteration and saves it\n".encode(),
            )
        self._notes[self.signals.index(stop)] = 1.0
        self.received = True

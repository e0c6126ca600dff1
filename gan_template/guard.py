"""The skip rule: when an iteration is abandoned, decided identically on every rank.

A GAN iteration is abandoned ("skipped") at the first update whose loss is
non-finite, that a user predicate rejects, or whose gradients are non-finite.
Updates already applied earlier in the same iteration (for example the first
of several critic updates) stay applied; nothing after the failing update runs.

Why the rank agreement matters: under DDP every update ends in a gradient
all-reduce. A rank that skips a backward (or a step) the other ranks run leaves
them waiting in that collective forever. Lightning gives no help in manual
optimization (a ``None`` return is simply turned into ``{}``; Lightning issue
#5243), so every rank must take the same decision.

How it is agreed, at no extra collective: each rank computes its local flags
(non-finite loss, predicate) *before* its backward, every rank then runs the
backward, whatever its flags say (the template's backward issues no collective
of its own, see ``distributed.py``, and running it is harmless: its gradients
are discarded), and the flags travel in the same all-reduce as the gradients
(:func:`gan_template.distributed.all_reduce_gradients`). After it every rank
holds the same summed flags and decides alike, before any optimizer step. A
separate ``reduce_boolean_decision`` before the backward would cost one more
collective per update: 1.4x per iteration with 2 CPU processes here
(``benchmarks/ddp_cost.py``).

Non-finite *gradients* need no collective either: they are checked after the
all-reduce, where every rank sees the same values.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

#: Reasons flagged from the loss; their order is the layout of the flag vector.
LOSS_REASONS = ("nonfinite_loss", "predicate")

#: ``predicate(metrics, iteration) -> bool``: True asks to skip the iteration.
SkipPredicate = Callable[[Mapping[str, Tensor], int], bool]


class SkipIteration(Exception):
    """Raised inside ``training_step`` to abandon the iteration; carries the reason."""

    def __init__(self, reason: str, phase: str) -> None:
        super().__init__(f"{phase} update skipped: {reason}")
        self.reason = reason
        self.phase = phase


class TooManySkips(RuntimeError):
    """Raised when ``skip.max_consecutive`` iterations in a row were skipped."""


class SkipGuard:
    """Takes the skip decision and keeps the skip accounting.

    Args:
        max_consecutive: stop the run (after saving a checkpoint) when this many
            iterations in a row were skipped; 0 disables the limit.
        inject_nonfinite_at: iteration numbers (generator updates completed so
            far) at which the discriminator loss is made NaN, once each, to test
            the skip path end to end. Empty in real runs.
        inject_rank: inject on this rank only (None: every rank).
        predicate: optional ``predicate(metrics, iteration) -> bool``; True skips.
        check_gradients: skip an update whose gradient norm is non-finite (costs
            one device-to-host sync per update).
        check_losses: take the pre-backward decision at all (non-finite loss,
            predicate, injection). It costs one small collective and one
            device-to-host sync per update; switching it off trades safety for
            speed: a NaN loss then reaches the optimizer unless check_gradients
            catches its gradients.
    """

    def __init__(
        self,
        max_consecutive: int = 20,
        inject_nonfinite_at: Iterable[int] = (),
        inject_rank: int | None = None,
        predicate: SkipPredicate | None = None,
        check_gradients: bool = True,
        check_losses: bool = True,
    ) -> None:
        if max_consecutive < 0:
            raise ValueError(f"skip.max_consecutive={max_consecutive} must be >= 0 (0 disables it)")
        self.max_consecutive = max_consecutive
        self.inject_nonfinite_at = frozenset(int(i) for i in inject_nonfinite_at)
        self.inject_rank = inject_rank
        self.predicate = predicate
        self.check_gradients = check_gradients
        self.check_losses = check_losses
        self.counts: Counter[str] = Counter()
        self.consecutive = 0
        self._injected: set[int] = set()

    # ---- the decision --------------------------------------------------------------------

    def inject(self, loss: Tensor, iteration: int, rank: int) -> Tensor:
        """Return ``loss`` made NaN if a fault is configured for this iteration and rank."""
        if iteration not in self.inject_nonfinite_at or iteration in self._injected:
            return loss
        self._injected.add(iteration)  # every rank records it, so resumes agree
        if self.inject_rank is not None and rank != self.inject_rank:
            return loss
        return loss * float("nan")

    def local_flags(
        self, loss: Tensor, metrics: Mapping[str, Tensor], iteration: int
    ) -> Tensor | None:
        """This rank's flags for an update as a device tensor (no sync).

        One flag per ``LOSS_REASONS`` entry, the predicate's only when there is
        a predicate (the layout is the same on every rank). None when
        ``check_losses`` is off.
        """
        if not self.check_losses:
            return None
        nonfinite = torch.isfinite(loss.detach()).logical_not().float().reshape(1)
        if self.predicate is None:
            return nonfinite
        wants_skip = bool(self.predicate(metrics, iteration))
        return torch.cat([nonfinite, nonfinite.new_tensor([float(wants_skip)])])

    def decide(self, summed_flags: Tensor | None, phase: str) -> None:
        """Raise :class:`SkipIteration` if any rank flagged this update.

        ``summed_flags`` are the flags summed over ranks (on one device: the
        local ones), identical on every rank, so every rank raises alike.
        """
        if summed_flags is None:
            return
        for reason, flag in zip(LOSS_REASONS, summed_flags.tolist(), strict=False):  # one host sync
            if flag > 0:
                raise SkipIteration(reason, phase)

    # ---- the accounting ------------------------------------------------------------------

    def record(self, skip_reason: str | None) -> None:
        """Count a finished iteration: skipped for ``skip_reason``, or completed (None)."""
        if skip_reason is None:
            self.consecutive = 0
            return
        self.counts[skip_reason] += 1
        self.consecutive += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def limit_reached(self) -> bool:
        return 0 < self.max_consecutive <= self.consecutive

    def describe(self) -> str:
        reasons = ", ".join(f"{reason} x{n}" for reason, n in sorted(self.counts.items()))
        return f"{self.total} skipped iterations ({reasons or 'none'})"

    def state_dict(self) -> dict[str, Any]:
        return {
            "counts": dict(self.counts),
            "consecutive": self.consecutive,
            "injected": sorted(self._injected),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.counts = Counter(state["counts"])
        self.consecutive = int(state["consecutive"])
        self._injected = set(state["injected"])

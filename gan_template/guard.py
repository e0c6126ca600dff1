"""The skip rule: when an iteration is abandoned, decided identically on every rank.

A GAN iteration is abandoned ("skipped") at the first update whose loss is
non-finite, that a user predicate rejects, or whose gradients are non-finite.
Updates already applied earlier in the same iteration (for example the first
of several critic updates) stay applied; nothing after the failing update runs.

Why the rank agreement matters: under DDP every backward ends in a gradient
all-reduce. A rank that skips a backward the other ranks run leaves them waiting
in that collective forever. Lightning gives no help in manual optimization
(a ``None`` return is simply turned into ``{}``; Lightning issue #5243), so the
decision made here is reduced across ranks *before* any backward: if any rank
wants to skip, every rank skips, for the same reason.

Non-finite *gradients* need no extra collective: they are checked after the
gradient all-reduce, so every rank sees the same values and decides alike.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

#: Reasons an iteration can be skipped before its backward; their order is the
#: layout of the flag vector reduced across ranks.
PRE_BACKWARD_REASONS = ("nonfinite_loss", "predicate")
#: Reasons decided after the (already synchronised) backward.
POST_BACKWARD_REASONS = ("nonfinite_gradient", "amp_overflow")

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

    def check_before_backward(
        self,
        loss: Tensor,
        metrics: Mapping[str, Tensor],
        iteration: int,
        phase: str,
        reduce_sum: Callable[[Tensor], Tensor],
    ) -> None:
        """Raise :class:`SkipIteration` if any rank wants to skip this update.

        ``reduce_sum`` sums a tensor over ranks (``strategy.reduce(t, reduce_op="sum")``;
        the identity on one device). One small collective carries every reason,
        so all ranks learn both *whether* and *why*; ``reduce_boolean_decision``
        would give only the whether, with the same cost.
        """
        if not self.check_losses:
            return
        wants_skip = self.predicate is not None and bool(self.predicate(metrics, iteration))
        flags = torch.stack(
            [
                (~torch.isfinite(loss.detach())).any().float(),
                torch.tensor(float(wants_skip), device=loss.device),
            ]
        )
        flags = reduce_sum(flags).tolist()  # the one host sync of the decision
        for reason, flag in zip(PRE_BACKWARD_REASONS, flags, strict=False):
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

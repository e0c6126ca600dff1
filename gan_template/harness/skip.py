"""The skip rule: which updates are abandoned, decided alike on every rank, and the accounting.

An update is *flagged* when its loss is non-finite, a user predicate rejects
it, or its gradients (after the all-reduce) are non-finite. From the first
flagged update of an iteration on, no update of that iteration is applied:
each still runs its forward and backward (every rank must run every
collective), but its optimizer step changes nothing. Updates before the first
flagged one stay applied. The iteration then counts as skipped:
``training_step`` returns ``None``, the iteration counter, EMA and LR
schedules do not advance, and running buffers (BatchNorm statistics) are put
back as they were before the iteration (``update.py`` does the mechanics).

Why every rank must agree: under DDP each update ends in a gradient all-reduce,
and a rank that skips one the others run leaves them waiting forever.
Lightning offers no help in manual optimization (#5243). The loss flags ride
in the gradient all-reduce (``distributed.py``), so every rank sees the same
summed flags at no extra collective; gradient flags are computed from the
averaged gradients, which are the same everywhere.
"""

from __future__ import annotations

import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from gan_template.harness.errors import TooManySkips, UserInputError

#: Built-in reasons an update is flagged. The first is read from the loss before
#: the backward, the last from the gradients after it; the predicate's reason
#: (``predicate_reason``) comes between them.
BUILT_IN_REASONS = ("nonfinite_loss", "nonfinite_gradient", "amp_overflow")

#: ``predicate(metrics, iteration) -> bool or a 0-d bool tensor``: true asks to skip.
#:
#: ``metrics`` holds the iteration's metrics so far, as detached 0-d tensors on
#: the device: before a discriminator update, its own (``d_loss``, ``d_real``,
#: ``d_fake``, ``d_accuracy_real``, ``d_accuracy_fake``, ``d_penalty`` when the
#: penalty is due) over those of the iteration's earlier updates; before the
#: generator update, the discriminator's and ``g_loss``. ``iteration`` counts the generator updates completed so far.
#: Return a tensor (``metrics["d_loss"] > 10``) to keep the decision on the
#: device; a Python bool (``.item()``, ``float(...)``) costs a host sync per update.
SkipPredicate = Callable[[Mapping[str, Tensor], int], "bool | Tensor"]


class SkipPredicateError(UserInputError):
    """The user's skip predicate raised: names it, the iteration and where it failed."""


class SkipRule:
    """What flags an update, and how many iterations were skipped, and why.

    Args:
        max_consecutive: stop the run (after saving a checkpoint) when this many
            iterations in a row were skipped; 0 never stops.
        inject_nonfinite_at: iterations (generator updates completed so far) at
            which the first discriminator loss is made NaN, once each: the
            skip path exercised end to end.
        inject_rank: inject on this rank only (None: every rank).
        predicate: optional user rule (:data:`SkipPredicate`); true skips the iteration.
        predicate_reason: the name its skips are counted and logged under
            (``train/skipped_<reason>``).
        check_losses: flag non-finite losses (injected faults are non-finite losses).
        check_gradients: flag non-finite gradients.

    Each check is on by itself: the predicate whenever it is set, whatever
    ``check_losses`` says, and faults are injected whenever they are listed.
    """

    def __init__(
        self,
        max_consecutive: int,
        inject_nonfinite_at: Iterable[int] = (),
        inject_rank: int | None = None,
        predicate: SkipPredicate | None = None,
        predicate_reason: str = "predicate",
        check_losses: bool = True,
        check_gradients: bool = True,
    ) -> None:
        if max_consecutive < 0:
            raise ValueError(f"max_consecutive={max_consecutive}: must be >= 0 (0: never stop)")
        if inject_rank is not None and inject_rank < 0:
            raise ValueError(f"inject_rank={inject_rank}: must be >= 0 or None (every rank)")
        if not predicate_reason.isidentifier() or predicate_reason in BUILT_IN_REASONS:
            raise ValueError(
                f"predicate_reason={predicate_reason!r}: must be a name of letters, digits and "
                f"underscores, other than the built-in reasons {list(BUILT_IN_REASONS)}"
            )
        self.max_consecutive = max_consecutive
        self.inject_nonfinite_at = frozenset(int(i) for i in inject_nonfinite_at)
        self.inject_rank = inject_rank
        self.predicate = predicate
        self.predicate_reason = predicate_reason
        #: Every reason, in order of precedence (an update flagged for several counts once).
        self.reasons = ("nonfinite_loss", predicate_reason, "nonfinite_gradient")
        self.check_losses = check_losses
        self.check_gradients = check_gradients
        self.counts: Counter[str] = Counter()
        self.consecutive = 0
        self._injected: set[int] = set()

    # ---- flags (device tensors: deciding costs no host sync) ---------------------------------

    def inject(self, loss: Tensor, iteration: int, rank: int) -> Tensor:
        """``loss`` made NaN if a fault is due at this iteration on this rank (once)."""
        if iteration not in self.inject_nonfinite_at or iteration in self._injected:
            return loss
        self._injected.add(iteration)  # every rank records it, so resumes agree
        if self.inject_rank is not None and rank != self.inject_rank:
            return loss
        return loss * float("nan")

    def loss_flags(self, loss: Tensor, metrics: Mapping[str, Tensor], iteration: int) -> Tensor:
        """``[nonfinite_loss]`` (when checked), then ``[predicate]`` (when set): 0/1 on the device."""
        parts = []
        if self.check_losses:
            parts.append(loss.detach().isfinite().logical_not().float().reshape(1))
        if self.predicate is not None:
            try:
                wants_skip = self.predicate(metrics, iteration)
            except Exception as error:
                raise self._predicate_error(error, metrics, iteration) from error
            if isinstance(wants_skip, Tensor):
                parts.append(wants_skip.detach().reshape(1).float())
            else:
                parts.append(loss.new_full((1,), float(bool(wants_skip)), dtype=torch.float32))
        return parts[0] if len(parts) == 1 else torch.cat(parts)  # no copy for one flag

    def _predicate_error(
        self, error: Exception, metrics: Mapping[str, Tensor], iteration: int
    ) -> SkipPredicateError:
        frames = traceback.extract_tb(error.__traceback__)
        where = f" ({frames[-1].filename}:{frames[-1].lineno})" if len(frames) > 1 else ""
        name = getattr(self.predicate, "func", self.predicate)
        name = f"{getattr(name, '__module__', '?')}.{getattr(name, '__qualname__', name)}"
        return SkipPredicateError(
            f"skip.predicate {name} raised {type(error).__name__}: {error}{where} at iteration "
            f"{iteration}; it was given the metrics {sorted(metrics)} (see SkipPredicate in "
            "gan_template/harness/skip.py). Fix the predicate, or set skip.predicate=null"
        )

    # ---- the accounting (host side, once per iteration) --------------------------------------

    def reason(self, names: tuple[str, ...], flags: list[bool]) -> str | None:
        """The first reason (in ``self.reasons`` order) whose flag is set; None if none is."""
        flagged = {name for name, flag in zip(names, flags, strict=True) if flag}
        return next((reason for reason in self.reasons if reason in flagged), None)

    def record(self, reason: str | None) -> None:
        """Count a finished iteration: skipped for ``reason``, or completed (None)."""
        if reason is None:
            self.consecutive = 0
            return
        self.counts[reason] += 1
        self.consecutive += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def stop_if_limit_reached(self, iteration: int) -> None:
        """Raise :class:`TooManySkips` after ``max_consecutive`` skipped iterations in a row."""
        if not 0 < self.max_consecutive <= self.consecutive:
            return
        raise TooManySkips(
            f"stopped after {self.consecutive} consecutive skipped iterations at iteration "
            f"{iteration} ({self.describe()}). Training has diverged or a skip predicate "
            "rejects everything: lower the learning rates, enable optim.gradient_clip_norm, or "
            "raise skip.max_consecutive. A checkpoint of the last good weights was saved "
            "(checkpoints/last.ckpt)."
        )

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

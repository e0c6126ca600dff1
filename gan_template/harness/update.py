"""One optimizer update from loss to step, with the skip rule applied on the device.

Every update of an iteration runs the same way (``Updates.apply``)::

    flags = [non-finite loss?, predicate?]                 device tensors, no sync
    backward
    all-reduce the gradients with the flags riding along   (distributed.py)
    optimizer.step(), inside which Lightning unscales 16-mixed gradients and
    calls on_before_optimizer_step -> Updates.before_step:
        clip the gradients, or measure their norm when it is logged;
        flag non-finite gradients (from the norm, or else in one fused pass
        that reduces nothing: GradScaler's check)
        skip = any flag of this iteration so far
        the step applies nothing when skip is set

and once per iteration ``end_iteration`` reads the flags on the host (the only
device-to-host sync of an iteration that writes no logs), restores the
running buffers if the iteration was skipped, and counts it. Under DDP the
first all-reduce of an iteration also carries each rank's "a SIGTERM arrived"
note, read in the same host read, so all ranks agree to stop after the same
iteration (``stopping.py``).

How a step applies nothing without the host knowing: fused optimizers
(``Adam``/``AdamW``/``SGD`` with ``fused=True``, the default in ``conf/optim``)
take a ``found_inf`` tensor, the protocol ``torch.amp.GradScaler`` uses, and
leave weights and state untouched when it is 1. Other optimizers, and any
optimizer under 16-mixed's GradScaler (which sets ``found_inf`` itself),
read the flag on the host instead: one sync per update, otherwise the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import Tensor, nn
from torch.optim import Optimizer

from gan_template.harness.distributed import all_reduce_gradients, disable_reducer
from gan_template.harness.lightning_internals import flag_nonfinite, step_takes_found_inf
from gan_template.harness.skip import SkipRule


def decides_on_device(optimizer: Optimizer, scaler: Any) -> bool:
    """Whether ``optimizer.step`` honours a device-side ``found_inf`` flag we may set."""
    return scaler is None and step_takes_found_inf(optimizer)


@dataclass
class StepInHand:
    """One update's state across Lightning's ``optimizer.step()``: the only hand-over.

    The update cannot clip and check its gradients before calling the step:
    Lightning's precision plugin unscales 16-mixed gradients *inside*
    ``LightningOptimizer.step()``, then calls ``on_before_optimizer_step``, then
    the optimizer's own step (clipping earlier would clip scaled gradients,
    Lightning #18089; strategies such as DeepSpeed and FSDP wrap that step too).
    So ``Updates.apply`` makes this object, calls the step, and the module's
    ``on_before_optimizer_step`` passes it to ``Updates.before_step``, which
    clips, checks and fills in what ``apply`` reads back. It lives for one
    update; nothing else crosses the hook.
    """

    measure_norm: bool
    loss: Tensor | None  # one process, no predicate: checked with the gradients
    loss_flags: Tensor | None  # decided before the backward (DDP, a predicate)
    grad_norm: Tensor | None = None  # set by before_step
    checked: bool = False  # set by before_step


class Updates:
    """Runs the optimizer updates of each iteration and decides, once, whether it was skipped.

    Args:
        rule: what flags an update, and the skip accounting.
        gradient_clip_norm: clip each update's gradient norm to this (in
            unscaled units); None measures the norm without clipping.
    """

    def __init__(self, rule: SkipRule, gradient_clip_norm: float | None = None) -> None:
        if gradient_clip_norm is not None and gradient_clip_norm <= 0:
            raise ValueError(f"gradient_clip_norm={gradient_clip_norm}: must be > 0 or null")
        self.rule = rule
        self.gradient_clip_norm = gradient_clip_norm
        self.last_reason: str | None = None  # of the iteration that ended last
        # Set once per fit by prepare().
        self._backward: Callable[[Tensor], None] = lambda loss: loss.backward()
        self._parameters: dict[Optimizer, list[nn.Parameter]] = {}
        self._on_device: dict[Optimizer, bool] = {}
        self._one: dict[Optimizer, Tensor] = {}  # the inverse scale of flag_nonfinite
        self._buffers: list[Tensor] = []
        self._saved_buffers: list[Tensor] = []
        self._wrapped_model: nn.Module | None = None
        self._world_size, self._rank, self._scaler = 1, 0, None
        self._stop_note: Callable[[], Sequence[float]] = lambda: (0.0,)
        self._stop_slots = 1
        #: Whether every rank agreed, at the iteration that ended last, to stop after it.
        self.stop_agreed = False
        #: The stop notes of that iteration, summed over ranks (one per stop signal).
        self.stop_notes: Sequence[float] = (0.0,)
        # Per iteration.
        self._iteration = 0
        self._first_update = True
        self.reasons: tuple[str, ...] = ()  # layout of the flags, set by prepare()
        self._flags: Tensor | None = None  # ``reasons`` layout (0./1.), ORed over the updates
        self._stop: Tensor | None = None  # under DDP: per stop signal, how many ranks got it
        self._metrics_so_far: dict[str, Tensor] = {}  # what a predicate sees (skip.SkipPredicate)
        # Per update, from apply() through Lightning's optimizer.step() to before_step().
        self._in_hand: StepInHand | None = None

    def prepare(
        self,
        optimizers: Sequence[Optimizer],
        buffers: Sequence[Tensor],
        backward: Callable[[Tensor], None],
        wrapped_model: nn.Module | None = None,
        world_size: int = 1,
        rank: int = 0,
        scaler: Any = None,
        stop_note: Callable[[], Sequence[float]] | None = None,
    ) -> None:
        """Take what the updates need from the fit, once (lists, not walks of the module tree).

        ``stop_note`` gives, per stop signal, 1.0 if this rank received it
        (``stopping.StopSignal.note``): a sequence of the same length every call.
        """
        self._backward = backward
        if stop_note is not None:
            self._stop_note = stop_note
            self._stop_slots = len(stop_note())
        self._parameters = {
            opt: [p for group in opt.param_groups for p in group["params"]] for opt in optimizers
        }
        self._on_device = {opt: decides_on_device(opt, scaler) for opt in optimizers}
        self._one = {
            opt: torch.ones(1, dtype=torch.float32, device=params[0].device)
            for opt, params in self._parameters.items()
            if params
        }
        self._buffers = list(buffers)
        self._saved_buffers = [b.clone() for b in self._buffers]
        self._wrapped_model = wrapped_model
        self._world_size, self._rank, self._scaler = world_size, rank, scaler
        rule = self.rule
        # What each entry of an update's flags means (only the checks that are on).
        self.reasons = (
            *(("nonfinite_loss",) if rule.check_losses else ()),
            *((rule.predicate_reason,) if rule.predicate is not None else ()),
            *(("nonfinite_gradient",) if rule.check_gradients else ()),
        )

    # ---- an iteration ----------------------------------------------------------------------

    def begin_iteration(self, iteration: int) -> None:
        # Gradients are averaged in apply(), not by DDP's reducer (distributed.py);
        # Lightning switches the reducer back on after every step.
        disable_reducer(self._wrapped_model)
        self._iteration, self._first_update, self._flags, self._stop = iteration, True, None, None
        if self._buffers:  # forwards update them before the flags are known: keep a copy
            torch._foreach_copy_(self._saved_buffers, self._buffers)

    def apply(
        self,
        optimizer: LightningOptimizer,
        loss: Tensor,
        metrics: Mapping[str, Tensor],
        measure_norm: bool = True,
    ) -> Tensor | None:
        """Backward ``loss``, average the gradients, step unless flagged.

        Returns the gradient norm (before clipping) when ``measure_norm`` or
        clipping asks for it, else None. ``metrics`` are this update's; a
        predicate sees them after the iteration's earlier ones (``skip.SkipPredicate``).
        """
        rule = self.rule
        first, self._first_update = self._first_update, False
        if first:
            loss = rule.inject(loss, self._iteration, self._rank)
        optimizer.zero_grad(set_to_none=True)
        checked_loss, loss_flags = None, None
        if rule.check_losses and self._world_size == 1 and rule.predicate is None:
            checked_loss = loss.detach()  # checked together with the gradient norm: fewer kernels
        elif rule.check_losses or rule.predicate is not None:
            # Flags decided before the backward; under DDP they ride in its all-reduce.
            if rule.predicate is not None:
                self._metrics_so_far.update((k, v.detach()) for k, v in metrics.items())
                metrics = self._metrics_so_far
            loss_flags = rule.loss_flags(loss, metrics, self._iteration)
        self._backward(loss)
        parameters = self._parameters[optimizer.optimizer]
        extra = loss_flags
        carries_stop = first and self._world_size > 1
        if carries_stop:  # this rank's stop note rides in the iteration's first all-reduce
            stop = loss.new_zeros(self._stop_slots, dtype=torch.float32)
            for slot, received in enumerate(self._stop_note()):
                if received:  # rare: a fill kernel, no copy from the host
                    stop[slot] = 1.0
            extra = stop if extra is None else torch.cat([extra.float(), stop])
        flags = all_reduce_gradients(parameters, self._world_size, extra=extra)
        if carries_stop and flags is not None:
            n = self._stop_slots
            self._stop, flags = flags[-n:], (flags[:-n] if len(flags) > n else None)
        if flags is not None and self._world_size > 1:
            loss_flags = flags.clamp_(max=1.0)  # summed over ranks
        self._in_hand = step = StepInHand(measure_norm, checked_loss, loss_flags)
        try:
            optimizer.step()  # Lightning: unscale, on_before_optimizer_step -> before_step, step
        finally:
            self._in_hand = None
            # GradScaler's protocol: the flag lives on the optimizer for its step only.
            optimizer.optimizer.__dict__.pop("found_inf", None)
        if not step.checked:
            raise RuntimeError(
                f"{type(self).__name__}.before_step did not run in optimizer.step(): a module "
                "that overrides on_before_optimizer_step must call super()'s"
            )
        return step.grad_norm

    def before_step(self, optimizer: Optimizer) -> None:
        """Clip and check the unscaled gradients; make the coming step apply nothing if flagged.

        Called from ``on_before_optimizer_step``, which Lightning runs after the
        precision plugin has unscaled the gradients (clipping earlier would clip
        16-mixed's scaled gradients, Lightning #18089).
        """
        step = self._in_hand
        if step is None:  # an optimizer stepped outside Updates.apply (not ours to check)
            return
        parameters = self._parameters[optimizer]
        if self._scaler is not None and step_takes_found_inf(optimizer):
            # Lightning leaves unscaling to a fused optimizer's own step (its
            # MixedPrecision.optimizer_step): too late to clip or check. The scaler's
            # step then sees the gradients unscaled and does not unscale them again.
            self._scaler.unscale_(optimizer)
        norm = None
        if self.gradient_clip_norm is not None:
            norm = nn.utils.clip_grad_norm_(parameters, self.gradient_clip_norm, foreach=True)
        elif step.measure_norm:
            norm = self._gradient_norm(parameters)
        step.checked = True
        step.grad_norm = None if norm is None else norm.detach()
        flags = self._update_flags(optimizer, parameters, step)
        if flags is None:
            return
        skip = flags.amax()  # 1 once any update of this iteration was flagged
        if self._on_device[optimizer]:
            optimizer.found_inf = skip  # type: ignore[attr-defined]  # read by fused step()
        elif skip.item():  # a host sync: this optimizer cannot take the flag on the device
            # An optimizer skips parameters without gradients, so the step applies
            # nothing (a GradScaler's step too, after its own inf check).
            optimizer.zero_grad(set_to_none=True)

    @staticmethod
    def _gradient_norm(parameters: list[nn.Parameter]) -> Tensor:
        return nn.utils.get_total_norm(
            [p.grad for p in parameters if p.grad is not None], foreach=True
        )

    def _update_flags(
        self, optimizer: Optimizer, parameters: list[nn.Parameter], step: StepInHand
    ) -> Tensor | None:
        """The iteration's flags so far, with this update's added; None without checks.

        One float tensor in ``self.reasons`` layout, made at the iteration's first
        update, into which every update ORs its flags: the fused check
        (``flag_nonfinite``, GradScaler's) only ever sets its flag. An update
        adds one kernel per check, whatever the number of updates and reasons.
        """
        if not self.reasons:
            return None
        one = self._one[optimizer]
        if self._flags is None:
            self._flags = torch.zeros(len(self.reasons), dtype=torch.float32, device=one.device)
        flags = self._flags
        n_loss = len(self.reasons) - int(self.rule.check_gradients)
        if step.loss is not None:  # one process, no predicate: the loss is checked here
            flag_nonfinite([step.loss.reshape(1)], flags[:1], one)
        elif step.loss_flags is not None:  # decided before the backward (DDP, a predicate)
            torch.maximum(flags[:n_loss], step.loss_flags.float(), out=flags[:n_loss])
        if self.rule.check_gradients:
            self._flag_gradients(parameters, flags[n_loss:], one, step.grad_norm)
        return flags

    def _flag_gradients(
        self, parameters: list[nn.Parameter], flag: Tensor, one: Tensor, norm: Tensor | None
    ) -> None:
        """Set ``flag`` if the gradients hold inf or NaN: from their norm when it was measured."""
        grads = [p.grad for p in parameters if p.grad is not None] if norm is None else [norm]
        if grads:
            flag_nonfinite(grads, flag, one)

    def end_iteration(self) -> str | None:
        """The reason the iteration was skipped, or None; restores buffers of a skipped one.

        Reading the flags (and under DDP the ranks' stop notes) is the iteration's one
        device-to-host sync. Sets ``stop_agreed``.
        """
        flags, stop, self._flags, self._stop = self._flags, self._stop, None, None
        if stop is None:
            values = [] if flags is None else flags.tolist()
            self.stop_notes = self._stop_note() if self._world_size <= 1 else (0.0,)
        else:  # DDP: the stop notes in the same read
            values = (stop if flags is None else torch.cat([flags, stop])).tolist()
            n = self._stop_slots
            self.stop_notes, values = values[-n:], values[:-n]
        self.stop_agreed = any(self.stop_notes)
        reason = (
            self.rule.reason(self.reasons, [bool(v) for v in values]) if flags is not None else None
        )
        self._metrics_so_far = {}  # nothing of the step outlives it
        if reason is not None and self._buffers:
            torch._foreach_copy_(self._buffers, self._saved_buffers)
        if reason == "nonfinite_gradient" and self._scaler is not None:
            reason = "amp_overflow"  # the GradScaler skipped the step and lowers its scale
        self.rule.record(reason)
        self.last_reason = reason
        return reason

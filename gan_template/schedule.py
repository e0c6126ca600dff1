"""The step schedule (which updates one GAN iteration makes, when regularisers run) and the
schedules of hyperparameters over the run.

One *iteration* is ``n_critic`` discriminator updates followed by one generator
update. The run length (``train.iterations``), checkpoint and evaluation
intervals, LR schedulers and the EMA all count iterations. Lightning's
``trainer.global_step`` counts every optimizer step (``n_critic + 1`` per
iteration, Lightning issues #17958 and #12643), so it is never used as a unit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any


@dataclass(frozen=True)
class StepSchedule:
    """How updates are interleaved.

    Attributes:
        n_critic: discriminator updates per generator update (WGAN uses 5).

    Lazy regularisation is each regulariser's own ``interval``
    (``penalties.Regularizer``): it runs on every ``interval``-th update of its
    side, scaled by ``interval`` (Karras et al., 2020, appendix B).
    """

    n_critic: int = 1

    def __post_init__(self) -> None:
        if self.n_critic < 1:
            raise ValueError(f"n_critic={self.n_critic}: must be >= 1")


# ---- hyperparameters that change over the run ---------------------------------------------------


class Schedule:
    """A hyperparameter as a function of the iteration (generator updates completed so far).

    Give one wherever a part takes a number that may change during the run (a
    penalty weight, the EMA decay, an optimizer's ``lr`` or ``betas``, an
    augmentation strength)::

        penalty:
          weight: {_target_: gan_template.schedule.Cosine, start: 0.05, end: 0.005,
                   iterations: ${train.iterations}}

    The module evaluates every schedule once per iteration, on the host from
    the iteration count (no device work, no sync), sets the value where the
    part reads it, and logs it at log steps as ``train/hp/<key>``. The value is
    a function of the iteration alone, so a resumed run continues it exactly.

    Args:
        start: the value at iteration 0 (after the warmup).
        end: the value at ``iterations`` and after.
        iterations: the length of the schedule (usually ``${train.iterations}``).
        warmup: iterations of linear ramp from ``warmup_start`` to ``start`` first
            (counted within ``iterations``).
        warmup_start: the value at iteration 0 when ``warmup > 0``.
    """

    def __init__(
        self,
        start: float,
        end: float,
        iterations: int,
        warmup: int = 0,
        warmup_start: float = 0.0,
    ) -> None:
        if iterations < 1:
            raise ValueError(f"iterations={iterations}: must be >= 1")
        if not 0 <= warmup < iterations:
            raise ValueError(f"warmup={warmup}: must be in [0, iterations={iterations})")
        self.start, self.end = float(start), float(end)
        self.iterations, self.warmup, self.warmup_start = iterations, warmup, float(warmup_start)

    def __call__(self, iteration: int) -> float:
        if iteration < self.warmup:
            return self.warmup_start + (self.start - self.warmup_start) * iteration / self.warmup
        progress = min(1.0, (iteration - self.warmup) / (self.iterations - self.warmup))
        return self.start + (self.end - self.start) * self.shape(progress)

    def shape(self, progress: float) -> float:
        """From 0 at ``progress`` 0 to 1 at ``progress`` 1."""
        raise NotImplementedError

    def extremes(self) -> tuple[float, ...]:
        """Every value the schedule reaches lies between these (for range checks)."""
        return (self.start, self.end, *((self.warmup_start,) if self.warmup else ()))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(start={self.start:g}, end={self.end:g}, "
            f"iterations={self.iterations}, warmup={self.warmup})"
        )


class Linear(Schedule):
    """Linear interpolation from ``start`` to ``end``."""

    def shape(self, progress: float) -> float:
        return progress


class Cosine(Schedule):
    """Half a cosine from ``start`` to ``end`` (R3GAN's schedules; Loshchilov & Hutter, 2017)."""

    def shape(self, progress: float) -> float:
        return 0.5 * (1.0 - math.cos(math.pi * progress))


def current(value: float | Schedule) -> float:
    """A part's number as it reads it: the module replaces a schedule by its value each
    iteration (:class:`ScheduledHyperparameters`); a part used on its own sees the start."""
    return value(0) if isinstance(value, Schedule) else value


def check_range(
    name: str, value: float | Schedule, low: float | None = None, high: float | None = None,
    high_inclusive: bool = True,
) -> None:  # fmt: skip
    """Raise ``ValueError`` unless ``value`` (every value a schedule reaches) lies in range."""
    values = value.extremes() if isinstance(value, Schedule) else (value,)
    for v in values:
        too_low = low is not None and v < low
        too_high = high is not None and (v > high if high_inclusive else v >= high)
        if too_low or too_high:
            bounds = f"[{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}"
            bounds += "]" if high_inclusive and high is not None else ")"
            what = f"{name}={value!r}" + (f" reaches {v:g}" if isinstance(value, Schedule) else "")
            raise ValueError(f"{what}: must be in {bounds}")


class ScheduledHyperparameters:
    """The schedules of a run, each bound to the place its value is read from.

    :meth:`bind` takes every :class:`Schedule` an object holds as an attribute
    and replaces it by its value, which :meth:`apply` then sets before every
    iteration; :meth:`bind_setter` binds a value kept elsewhere (an optimizer's
    param group). With no schedule, ``apply`` is a loop over nothing.
    """

    def __init__(self) -> None:
        self._bindings: dict[str, tuple[Schedule, Callable[[float], None]]] = {}
        self._optimizer_schedules: dict[str, dict[str, Schedule]] = {}
        self.values: dict[str, float] = {}

    def bind(self, prefix: str, part: object) -> None:
        """Bind the schedules among ``part``'s attributes, named ``<prefix>.<attribute>``."""
        if part is None:
            return
        for attribute, value in list(vars(part).items()):
            if isinstance(value, Schedule):
                self.bind_setter(f"{prefix}.{attribute}", value, partial(setattr, part, attribute))

    def bind_setter(self, name: str, schedule: Schedule, setter: Callable[[float], None]) -> None:
        self._bindings[name] = (schedule, setter)
        setter(schedule(0))
        self.values[name] = schedule(0)

    def apply(self, iteration: int) -> None:
        """Set every scheduled value to the schedule's value at ``iteration``."""
        for name, (schedule, setter) in self._bindings.items():
            value = schedule(iteration)
            setter(value)
            self.values[name] = value

    def __len__(self) -> int:
        return len(self._bindings)

    def optimizer_factory(
        self, which: str, factory: Callable[..., Any], scheduler: object | None
    ) -> Callable[..., Any]:
        """``factory`` without its schedules, which :meth:`bind_optimizer` binds once it is built."""
        resolved, schedules = split_optimizer_schedules(factory)
        if "lr" in schedules and scheduler is not None:
            raise ValueError(
                f"optim.{which}.lr is a schedule and optim.{which}_scheduler is set too: "
                "both would set the learning rate; keep one of them"
            )
        self._optimizer_schedules[which] = schedules
        return resolved

    def bind_optimizer(self, which: str, optimizer: Any) -> None:
        """Bind the schedules of ``optimizer_factory(which, ...)`` to ``optimizer``'s param groups."""
        for key, schedule in self._optimizer_schedules.get(which, {}).items():
            self.bind_setter(f"optim.{which}.{key}", schedule, param_group_setter(optimizer, key))

    def schedules_learning_rate(self, which: str) -> bool:
        return "lr" in self._optimizer_schedules.get(which, {})


def split_optimizer_schedules(
    factory: Callable[..., Any],
) -> tuple[Callable[..., Any], dict[str, Schedule]]:
    """``factory`` (an optimizer partial) with its schedules replaced by their first values.

    Returns the new partial and ``{param-group key: schedule}``, where the key is
    ``lr``, or ``betas.0`` / ``betas.1`` for one of Adam's betas. ``betas`` also
    become floats: YAML reads ``[0, 0.99]`` as an int and a float, which torch's
    Adam refuses ("betas must be either both floats or both Tensors").
    """
    if not isinstance(factory, partial):
        return factory, {}
    keywords = dict(factory.keywords)
    schedules: dict[str, Schedule] = {}
    for key, value in keywords.items():
        if isinstance(value, Schedule):
            schedules[key] = value
            keywords[key] = value(0)
    betas = keywords.get("betas")
    if betas is not None:
        resolved = []
        for index, beta in enumerate(betas):
            if isinstance(beta, Schedule):
                schedules[f"betas.{index}"] = beta
                beta = beta(0)
            resolved.append(float(beta))
        keywords["betas"] = tuple(resolved)
    return partial(factory.func, *factory.args, **keywords), schedules


def param_group_setter(optimizer: Any, key: str) -> Callable[[float], None]:
    """Sets ``key`` (``lr``, ``betas.1``, ...) in every param group of ``optimizer``."""
    name, _, index = key.partition(".")

    def set_value(value: float) -> None:
        for group in optimizer.param_groups:
            if index:
                items = list(group[name])
                items[int(index)] = value
                group[name] = tuple(items)
            else:
                group[name] = value

    return set_value

"""The parts' contracts, checked on tiny stand-in tensors before training.

A loss, penalty or skip predicate from the user's own package that breaks its
contract would otherwise fail at the first step with a raw traceback from deep
inside the module (or, for a predicate, inside ``skip.py``). Each part is
called here once on a few random samples of the data's shape, through a
stand-in discriminator (a linear map), and every broken contract is reported
at once, naming the section, the user's class, what it broke and the fix.
What the stand-ins cannot tell (an error in the part's own arithmetic, a
metric the predicate reads that they lack) is left to the first step, whose
traceback shows it.
Copies of the parts are called, so running state (LeCam's averages) and
counters are untouched.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from gan_template.harness.errors import ConfigError
from gan_template.losses import AdversarialLoss, split_terms
from gan_template.penalties import DiscriminatorPass, Penalty, Regularizer

#: Stand-in samples per check: enough for batch statistics, few enough to cost nothing.
SAMPLES = 4


def check_contracts(
    loss: AdversarialLoss,
    penalty: Penalty | None,
    predicate: Any,
    sample_shape: Sequence[int],
    regularizers: Mapping[str, Regularizer] | None = None,
) -> None:
    """Raise :class:`ConfigError` naming every part whose contract a dry call breaks.

    The discriminator's regularisers are called through the stand-in; the
    generator's need a generator, so their first call is the first iteration's.
    """
    generator = torch.Generator().manual_seed(0)
    real = torch.randn(SAMPLES, *sample_shape, generator=generator)
    fake = torch.randn(SAMPLES, *sample_shape, generator=generator)
    weights = (torch.randn(math.prod(sample_shape), 1, generator=generator) / 10).requires_grad_()

    def judge(samples: Tensor) -> Tensor:  # a stand-in discriminator, differentiable
        return samples.flatten(1) @ weights

    problems = []
    for method, arguments in (
        ("discriminator_loss", (judge(real), judge(fake))),
        ("generator_loss", (judge(fake), judge(real))),
    ):
        problem = _scalar_problem(getattr(loss, method), arguments)
        if problem:
            problems.append(f"loss ({_name(loss)}).{method}(...) {problem}")
    penalties = {"penalty": penalty} | {
        f"regularizers.{name}": r
        for name, r in (regularizers or {}).items()
        if getattr(r, "update", None) == "discriminator"
    }
    for key, part in penalties.items():
        if part is not None:
            problem = _penalty_problem(copy.deepcopy(part), judge, real, fake)
            if problem:
                problems.append(f"{key} ({_name(part)}) {problem}")
    if predicate is not None:
        metrics = {"d_loss": judge(real).mean().detach(), "g_loss": judge(fake).mean().detach()}
        problem = _flag_problem(predicate, metrics)
        if problem:
            problems.append(f"skip.predicate ({_name(predicate)}) {problem}")
    if problems:
        raise ConfigError(
            "a part breaks its contract (checked on stand-in tensors before training):\n  - "
            + "\n  - ".join(problems)
            + "\n(docs/extending.md shows each part's contract)"
        )


def _name(part: Any) -> str:
    part = getattr(part, "func", part)  # a partial: the function it wraps
    named = part if inspect.isfunction(part) or inspect.isclass(part) else type(part)
    return f"{named.__module__}.{named.__qualname__}"


def _scalar_problem(method: Any, arguments: tuple[Tensor, ...]) -> str | None:
    try:
        value = method(*arguments)
    except NotImplementedError:
        return "is not defined: a loss defines discriminator_loss and generator_loss"
    except Exception:  # other code errors: the first step shows them with their traceback
        return None
    return _tensor_problem(value)


def _penalty_problem(penalty: Regularizer, judge: Any, real: Tensor, fake: Tensor) -> str | None:
    if penalty.input_gradients:
        outputs = DiscriminatorPass.of(judge, real, fake)
    else:  # as the module calls it: images that do not require gradients
        outputs = DiscriminatorPass(judge, real, fake, judge(real), judge(fake))
    try:
        value = penalty(outputs)
    except NotImplementedError:
        return "does not define value(outputs), the unweighted penalty"
    except RuntimeError as error:
        if "does not require grad" in str(error) and not penalty.input_gradients:
            return (
                "differentiates the logits with respect to the images, but its class does not "
                "set `input_gradients = True` (the module then makes the images require "
                "gradients before the discriminator's forward pass)"
            )
        return None  # other code errors: the first step shows them with their traceback
    except Exception:
        return None
    return _tensor_problem(value)


def _tensor_problem(value: Any) -> str | None:
    if isinstance(value, tuple):  # (value, terms): the value is the contract's
        try:
            value, terms = split_terms(value)
        except ValueError:
            return "returned a tuple that is not (value, {name: term}): return a 0-d tensor"
        if not isinstance(terms, Mapping):
            return f"returned terms as a {type(terms).__name__}: give them as {{name: tensor}}"
    if not isinstance(value, Tensor):
        return (
            f"returned a {type(value).__name__}, not a tensor: return a 0-d tensor that keeps the "
            "graph (no .item() or float(...), which also cost a host sync)"
        )
    if value.numel() != 1:
        return f"returned a tensor of shape {tuple(value.shape)}: return a scalar (e.g. .mean())"
    if not value.requires_grad:
        return "returned a tensor without a graph (detached): the update could not differentiate it"
    return None


def _flag_problem(predicate: Any, metrics: dict[str, Tensor]) -> str | None:
    try:
        flag = predicate(metrics, 0)
    except Exception:  # e.g. a metric the stand-ins lack: the first step's call names it
        return None
    if isinstance(flag, Tensor) and flag.numel() != 1:
        return (
            f"returned a tensor of {flag.numel()} values (shape {tuple(flag.shape)}): return one "
            "flag (a Python bool or a 0-d bool tensor), e.g. with .any()"
        )
    if not isinstance(flag, (bool, Tensor)):
        return f"returned a {type(flag).__name__}: return a bool or a 0-d bool tensor"
    return None

"""What Lightning's checkpoints leave out and an exact resume needs: every rank's RNG states.

Lightning restores networks, optimizers, schedulers, loop progress and
callback states. It does not restore random number generators, so a resumed
run draws different noise than the uninterrupted one would have. The module
stores each rank's states (gathered to rank 0, which writes the file) and puts
them back on load. The data order is restored separately: it depends only on
``(data_seed, epoch, rank)`` and the position in the epoch (``data/sampling.py``).

On resume, what must match is the shape of every saved tensor: the networks
the config describes (built on the meta device, no memory) are compared with
the checkpoint's ``state_dict`` (:func:`shape_mismatches`). Any other change of
the config (:func:`config_changes`) is reported and applied; new learning
rates too (``GANModule.on_train_start``).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


def capture_rng_state() -> dict[str, Any]:
    """The state of every global RNG this process uses."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        # As plain types, so checkpoints stay loadable with torch.load(weights_only=True).
        "numpy": _numpy_state_to_plain(np.random.get_state()),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state(
        (name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian)
    )
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _numpy_state_to_plain(state: Any) -> tuple[Any, ...]:
    """numpy's legacy state tuple with the key array as a tensor and numbers as Python numbers."""
    name, keys, position, has_gauss, cached_gaussian = state
    return (
        name,
        torch.from_numpy(keys.astype(np.int64)),
        int(position),
        int(has_gauss),
        float(cached_gaussian),
    )


def gather_rng_states() -> list[dict[str, Any]]:
    """Every rank's RNG state, in rank order (a collective: call it on all ranks)."""
    state = capture_rng_state()
    if not (dist.is_available() and dist.is_initialized()):
        return [state]
    states: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(states, state)
    return states


#: Settings that say where a run is, not what it trains; and ``module.*``, whose values
#: mirror the other sections (``conf/config.yaml``).
PLACE_KEYS = ("paths.", "ckpt_path", "module.")
#: Settings that usually decide the shapes of the networks, named when the shapes differ.
SHAPE_SECTIONS = ("model.", "data.", "ema")


def config_changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, tuple]:
    """``{dotted key: (saved value, current value)}`` for every setting that differs."""
    before, after = _flatten(saved), _flatten(current)
    return {
        key: (before.get(key, "<unset>"), after.get(key, "<unset>"))
        for key in sorted(before.keys() | after.keys())
        if before.get(key, "<unset>") != after.get(key, "<unset>")
        and not key.startswith(PLACE_KEYS)
    }


def shape_mismatches(
    saved: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]
) -> list[str]:
    """Each tensor whose shape differs, or that only one of the two state dicts has."""
    problems = [
        f"{key}: {tuple(saved[key].shape)} in the checkpoint, {tuple(value.shape)} now"
        for key, value in expected.items()
        if key in saved and saved[key].shape != value.shape
    ]
    missing = [key for key in expected if key not in saved]
    unexpected = [key for key in saved if key not in expected]
    for keys, what in (
        (missing, "not in the checkpoint"),
        (unexpected, "not in this config's networks"),
    ):
        if keys:
            shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
            problems.append(f"{what}: {shown}")
    return problems


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat |= _flatten(value, f"{prefix}{key}.")
        return flat
    return {prefix[:-1]: node}

"""Counting the host's reads of tensor values: the points where a CPU waits for a GPU.

A GPU runs ahead of the Python that feeds it only while nothing reads a result
back: ``.item()``, ``bool(t)``, ``.tolist()``, ``.numpy()``, or a copy to the
CPU each make the host wait until every queued kernel has finished. The GAN
loop allows one such read per iteration (the skip decision, ``update.py``),
plus those of the iterations that write logs.

:class:`HostSyncCounter` counts them on any device, so a test on a CPU-only
machine catches a read that would stall a GPU: scalar reads are seen by a
``TorchDispatchMode`` (``aten._local_scalar_dense``) and device-to-host copies
by their devices; ``tolist`` and ``numpy`` of a CPU tensor never reach the
dispatcher, so those two methods are wrapped while counting. (On a GPU,
``torch.cuda.set_sync_debug_mode("warn")`` reports the same points.)
"""

from __future__ import annotations

import traceback
from collections import Counter
from collections.abc import Callable
from types import TracebackType
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

_COPIES = {aten._to_copy.default, aten.copy_.default}


class _Dispatch(TorchDispatchMode):
    def __init__(self, record: Callable[[str], None]) -> None:
        super().__init__()
        self.record = record

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        if func is aten._local_scalar_dense.default:
            self.record("item")
        elif func in _COPIES:
            source = args[1] if func is aten.copy_.default else args[0]
            target = args[0].device if func is aten.copy_.default else kwargs.get("device")
            if (
                isinstance(source, torch.Tensor)
                and source.device.type != "cpu"
                and target is not None
                and torch.device(target).type == "cpu"
            ):
                self.record("device_to_host_copy")
        return func(*args, **kwargs)


class HostSyncCounter:
    """Counts host reads of tensor values inside a ``with`` block (this thread only).

    ``counts`` has one entry per kind (``item``, ``tolist``, ``numpy``,
    ``device_to_host_copy``); ``where`` the innermost line outside torch of each
    read, to point at the code that caused it.

    Example::

        with HostSyncCounter() as syncs:
            trainer.fit(module, datamodule)
        print(syncs.total, syncs.where.most_common(3))
    """

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.where: Counter[str] = Counter()
        self._mode = _Dispatch(self._record)
        self._originals: dict[str, Any] = {}
        self._depth = 0  # a wrapped method that dispatches is counted once

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def _record(self, kind: str) -> None:
        if self._depth:  # inside a wrapped method, already counted
            return
        self.counts[kind] += 1
        for frame in reversed(traceback.extract_stack()[:-1]):
            path = frame.filename.replace("\\", "/")
            if "/torch/" not in path and frame.filename != __file__:
                self.where[f"{path}:{frame.lineno} ({frame.name})"] += 1
                break

    def _wrap(self, name: str) -> None:
        original = getattr(torch.Tensor, name)
        self._originals[name] = original
        counter = self

        def counted(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            counter._record(name)
            counter._depth += 1
            try:
                return original(tensor, *args, **kwargs)
            finally:
                counter._depth -= 1

        setattr(torch.Tensor, name, counted)

    def __enter__(self) -> HostSyncCounter:
        for name in ("tolist", "numpy"):
            self._wrap(name)
        self._mode.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._mode.__exit__(kind, error, trace)
        for name, original in self._originals.items():
            setattr(torch.Tensor, name, original)
        self._originals.clear()

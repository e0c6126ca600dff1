"""Running state of a module's parts (ADA's probability, LeCam's averages), kept in float32.

``trainer.precision=bf16-true`` (or ``16-true``) casts every floating tensor of
the module, buffers included. A probability that moves by 64 / 500,000 per
adjustment cannot move at all in bfloat16 near 0.5 (its spacing there is
0.004), and counts of images stop being exact above 256; so these parts keep
their buffers in float32 through any cast, while still following moves to a
device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


class Float32Buffers(nn.Module):
    """An ``nn.Module`` whose floating buffers stay float32 through ``.to(dtype)``, ``.half()``, ..."""

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Any:
        super()._apply(fn, recurse)
        for name, buffer in self._buffers.items():
            if buffer is not None and buffer.is_floating_point() and buffer.dtype != torch.float32:
                self._buffers[name] = buffer.float()
        return self

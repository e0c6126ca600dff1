"""Process-wide settings that training needs and that are no part of the algorithm."""

from __future__ import annotations

import logging
import os
import warnings

import torch

# Lightning 2.6 calls a torch.utils._pytree API that newer torch deprecates; the
# warning is Lightning's to fix and says nothing to users of this template.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=Warning)
# The template writes its rows every ``log_every_n_steps`` *iterations*, across
# epochs (``GANModule._logs_at``), so Lightning's warning that an epoch shorter
# than the interval shows no logs is false here.
warnings.filterwarnings("ignore", message=r"The number of training batches .* logging interval")


class _DropAdvert(logging.Filter):
    """Drops Lightning's tip to install its cloud logger, printed at every start."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


# ``rank_zero_info`` logs through whichever of these two Lightning imported last.
for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
    logging.getLogger(_name).addFilter(_DropAdvert())


def avoid_per_step_gpu_probing() -> None:
    """Without a GPU, stop torch from probing NVML on every optimizer step.

    ``import lightning`` sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` (so that
    checking for GPUs does not initialise CUDA before a fork). With it, every
    ``torch.cuda.is_available()`` loads the NVML library again, and
    ``Adam.step`` asks on every call: a large share of a small network's
    iteration (``benchmarks/vs_plain_loop.py`` measures it). On a machine with
    no GPU there is no CUDA to protect, so the cheap check is safe. (With a
    GPU, CUDA is initialised by training and torch caches the answer.)
    """
    if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == "1" and not torch.cuda.is_available():
        os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "0"

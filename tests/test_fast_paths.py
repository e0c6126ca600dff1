"""The speed switches change how the same computation runs, not what it computes.

Their effect on speed is measured by ``benchmarks/fast_paths.py``, not here.
"""

from __future__ import annotations

import pytest
import torch
from helpers import StepRecorder, run, without_evaluation

DCGAN = [
    "experiment=dcgan",
    "train.iterations=4",
    "data.batch_size=16",
    "trainer.deterministic=true",
]


def losses(make_config, *overrides: str) -> tuple[torch.Tensor, dict]:
    recorder = StepRecorder()
    cfg = make_config(*DCGAN, *overrides, run_dir=make_config.new_run_dir())
    result = run(without_evaluation(cfg), recorder)
    trajectory = torch.stack([torch.stack([o["d_loss"], o["g_loss"]]) for o in recorder.outputs])
    return trajectory, result


def test_channels_last_keeps_conv_weights_and_batches_in_that_layout(make_config) -> None:
    eager, _ = losses(make_config)
    fast, result = losses(make_config, "train.channels_last=true")
    torch.testing.assert_close(fast, eager, rtol=1e-4, atol=1e-5)
    module = result["module"]
    weights = [p for p in module.parameters() if p.dim() == 4]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    batch = torch.zeros(2, 3, 8, 8)
    real, _ = module.unpack(batch)
    assert real.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("foreach", [True, False], ids=["foreach", "for-loop"])
def test_adam_implementations_follow_the_fused_default_trajectory(make_config, foreach) -> None:
    fused, default = losses(make_config)
    assert all(o.optimizer.defaults["fused"] for o in default["module"].optimizers())
    other, result = losses(
        make_config,
        *(f"optim.{net}.fused=false" for net in ("generator", "discriminator")),
        *(f"optim.{net}.foreach={str(foreach).lower()}" for net in ("generator", "discriminator")),
    )
    torch.testing.assert_close(other, fused, rtol=1e-4, atol=1e-5)
    for optimizer in result["module"].optimizers():
        assert optimizer.optimizer.defaults["foreach"] is foreach
        assert not optimizer.optimizer.defaults["fused"]

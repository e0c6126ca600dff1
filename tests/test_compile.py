"""torch.compile of the networks works with the manual loop and toggling."""

from __future__ import annotations

import pytest
import torch
from helpers import StepRecorder, run, without_evaluation


def losses(make_config, *overrides: str) -> torch.Tensor:
    recorder = StepRecorder()
    cfg = make_config(
        "experiment=ring",
        "train.iterations=6",
        "trainer.deterministic=true",
        *overrides,
        run_dir=make_config.new_run_dir(),
    )
    run(without_evaluation(cfg), recorder)
    return torch.stack([torch.stack([o["d_loss"], o["g_loss"]]) for o in recorder.outputs])


@pytest.mark.parametrize("penalty", ["none", "gradient_penalty"])
def test_compiled_networks_follow_the_eager_loss_trajectory(make_config, penalty: str) -> None:
    eager = losses(make_config, f"penalty={penalty}")
    compiled = losses(make_config, f"penalty={penalty}", "train.compile=true")
    assert compiled.shape == eager.shape == (6, 2)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)

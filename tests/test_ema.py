"""Generator EMA: its maths, its ramp, and its place in checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import run
from torch import nn

from gan_template.ema import GeneratorEMA


def test_update_is_a_lerp_with_the_ramped_decay() -> None:
    net = nn.Linear(2, 2)
    ema = GeneratorEMA(net, decay=0.9, rampup=None)
    start = ema.module.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net, updates=1)
    assert torch.allclose(ema.module.weight, 0.9 * start + 0.1 * net.weight)


def test_rampup_starts_by_copying_and_reaches_the_final_decay() -> None:
    ema = GeneratorEMA(nn.Linear(1, 1), decay=0.999, rampup=0.05)
    assert ema.decay_at(1) == 0.0  # horizon 0.05 updates: copy the generator
    assert ema.decay_at(100) == pytest.approx(1 - 1 / 5)  # horizon 5 updates
    assert ema.decay_at(10**6) == pytest.approx(0.999)


def test_buffers_are_copied_not_averaged() -> None:
    net = nn.BatchNorm1d(3)
    ema = GeneratorEMA(net, decay=0.99)
    net.train()(torch.randn(16, 3) * 5 + 2)
    ema.update(net, updates=1000)
    assert torch.equal(ema.module.running_mean, net.running_mean)


@pytest.mark.parametrize("decay", [1.0, -0.1])
def test_decay_outside_unit_interval_is_refused(decay: float) -> None:
    with pytest.raises(ValueError, match=r"ema.decay=.* must be in \[0, 1\)"):
        GeneratorEMA(nn.Linear(1, 1), decay=decay)


def test_ema_weights_round_trip_through_checkpoints(make_config) -> None:
    cfg = make_config("experiment=dcgan", "train.iterations=4", "ema.rampup=null")
    cfg.callbacks.image_eval = None  # not needed here
    result = run(cfg)
    ema = result["module"].generator_ema.module.state_dict()
    saved = torch.load(Path(cfg.paths.run_dir) / "checkpoints" / "last.ckpt", weights_only=False)[
        "state_dict"
    ]
    for key, value in ema.items():
        assert torch.equal(saved[f"generator_ema.module.{key}"], value)
    generator = result["module"].generator.state_dict()
    assert any(not torch.equal(generator[k], v) for k, v in ema.items() if v.is_floating_point())


def test_ema_can_be_switched_off(make_config) -> None:
    cfg = make_config("train.iterations=2", "ema.enabled=false", "experiment=ring")
    result = run(cfg)
    assert result["module"].generator_ema is None
    saved = torch.load(Path(cfg.paths.run_dir) / "checkpoints" / "last.ckpt", weights_only=False)[
        "state_dict"
    ]
    assert not any(k.startswith("generator_ema") for k in saved)

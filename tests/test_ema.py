"""Generator EMA: its maths, its ramp, and its place in checkpoints."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import pytest
import torch
from helpers import run
from torch import nn

from gan_template.ema import GeneratorEMA, recompute_batch_norm


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


class BatchNormGenerator(nn.Module):
    """Noise -> Linear -> BatchNorm -> ReLU -> Linear; class-conditional when ``num_classes``."""

    def __init__(self, num_classes: int = 0) -> None:
        super().__init__()
        self.latent_dim, self.sample_shape, self.num_classes = 4, (2,), num_classes
        self.embed = nn.Embedding(max(num_classes, 1), 4)
        self.inner = nn.Linear(4, 8)
        self.norm = nn.BatchNorm1d(8)
        self.out = nn.Linear(8, 2)
        self.labels_seen: list[torch.Tensor] = []

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if labels is not None:
            self.labels_seen.append(labels)
            z = z + self.embed(labels)
        return self.out(torch.relu(self.norm(self.inner(z))))


def moved_away(net: BatchNormGenerator) -> None:
    """New weights, and running statistics collected with them on shifted inputs."""
    with torch.no_grad():
        net.inner.weight.mul_(3.0).add_(1.0)
        net.inner.bias.add_(2.0)
    for _ in range(20):
        net.train()(torch.randn(64, 4) + 3.0)


def test_sampling_copy_has_batch_norm_statistics_of_the_averaged_weights() -> None:
    torch.manual_seed(0)
    net = BatchNormGenerator()
    ema = GeneratorEMA(net, decay=0.5, rampup=None, batch_norm_samples=8192)
    moved_away(net)
    ema.update(net, updates=1)  # weights: halfway; statistics: the raw network's
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    rng_before = torch.get_rng_state()

    sampler = ema.for_sampling()

    with torch.no_grad():  # the averaged weights' own pre-BatchNorm activations on noise
        own = ema.module.inner(torch.randn(200_000, 4, generator=torch.Generator().manual_seed(9)))
    assert sampler is not ema.module
    # An estimate from 8192 samples: within 5 standard errors of the truth.
    error_of_mean = own.std(0) / 8192**0.5
    assert ((sampler.norm.running_mean - own.mean(0)).abs() < 5 * error_of_mean).all()
    torch.testing.assert_close(sampler.norm.running_var, own.var(0), atol=0.0, rtol=0.08)
    # What sampling used before: the raw network's statistics, far from the average's.
    assert ((ema.module.norm.running_mean - own.mean(0)).abs() > 20 * error_of_mean).any()
    # The training state, checkpoints and random stream are untouched.
    assert all(torch.equal(v, before[k]) for k, v in ema.module.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert sampler.norm.momentum == ema.module.norm.momentum  # restored after the estimate
    # A pure function of the weights: the same statistics every time.
    assert torch.equal(ema.for_sampling().norm.running_var, sampler.norm.running_var)


def test_sampling_copy_is_made_once_per_state_of_the_average() -> None:
    net = BatchNormGenerator()
    ema = GeneratorEMA(net, batch_norm_samples=512)
    holder = nn.ModuleDict({"ema": ema})  # loaded as part of a bigger module, like GANModule
    first = ema.for_sampling()
    assert ema.for_sampling() is first  # no second estimate for a second evaluation
    ema.update(net, updates=10)
    after_update = ema.for_sampling()
    assert after_update is not first
    holder.load_state_dict(holder.state_dict())
    assert ema.for_sampling() is not after_update  # a loaded average gets a new copy
    assert not any(k.startswith("ema._sampler") for k in holder.state_dict())
    copy.deepcopy(holder)
    pickle.dumps(holder)


def test_conditional_generator_gets_uniform_labels_for_its_statistics() -> None:
    net = BatchNormGenerator(num_classes=3)
    recompute_batch_norm(net, num_samples=600, batch_size=256)
    labels = torch.cat(net.labels_seen)
    assert [len(batch) for batch in net.labels_seen] == [256, 256, 88]
    assert set(labels.tolist()) == {0, 1, 2}
    assert net.training  # mode restored


def test_without_batch_norm_or_when_off_sampling_uses_the_average_itself() -> None:
    plain = GeneratorEMA(nn.Linear(2, 2))
    assert plain.for_sampling() is plain.module
    off = GeneratorEMA(BatchNormGenerator(), batch_norm_samples=0)
    assert off.for_sampling() is off.module
    with pytest.raises(ValueError, match=r"batch_norm_samples=-1: must be >= 0"):
        GeneratorEMA(BatchNormGenerator(), batch_norm_samples=-1)


@pytest.mark.parametrize("decay", [1.0, -0.1])
def test_decay_outside_unit_interval_is_refused(decay: float) -> None:
    with pytest.raises(ValueError, match=r"decay=.*: must be in \[0, 1\)"):
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
    cfg = make_config("train.iterations=2", "ema=none", "experiment=ring")
    result = run(cfg)
    assert result["module"].generator_ema is None
    saved = torch.load(Path(cfg.paths.run_dir) / "checkpoints" / "last.ckpt", weights_only=False)[
        "state_dict"
    ]
    assert not any(k.startswith("generator_ema") for k in saved)


def test_sampling_from_a_checkpoint_uses_the_statistics_training_sampled_with(
    make_config,
) -> None:
    """``python -m gan_template.sample`` and the training's evaluations sample alike."""
    from gan_template.sample import load_generator

    cfg = make_config("experiment=dcgan", "train.iterations=4", "ema.batch_norm_samples=512")
    cfg.callbacks.image_eval = None
    module = run(cfg)["module"]
    path = Path(cfg.paths.run_dir) / "checkpoints" / "last.ckpt"
    loaded, _ = load_generator(path)
    in_training = module.sampling_generator.state_dict()
    saved = torch.load(path, weights_only=False)["state_dict"]
    norm_stats = [k for k in in_training if k.endswith(("running_mean", "running_var"))]
    assert norm_stats
    for key, value in loaded.state_dict().items():
        torch.testing.assert_close(value, in_training[key], msg=key)
    # ... which are not the raw generator's statistics the checkpoint holds.
    assert any(
        not torch.allclose(in_training[k], saved[f"generator_ema.module.{k}"]) for k in norm_stats
    )

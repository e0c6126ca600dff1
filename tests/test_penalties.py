"""Penalties on discriminators whose input gradients are known in closed form."""

from __future__ import annotations

import pytest
import torch
from helpers import StepRecorder, run, without_evaluation

from gan_template.penalties import (
    R1,
    R1R2,
    R2,
    DiscriminatorPass,
    GeneratorPass,
    GradientPenalty,
    LeCam,
    PathLength,
    gradient_penalty,
    r1_penalty,
    r2_penalty,
)
from gan_template.schedule import Cosine


def test_gradient_penalty_of_a_linear_critic_is_norm_minus_one_squared() -> None:
    w = torch.tensor([3.0, 4.0], requires_grad=True)  # ||w|| = 5 everywhere

    def critic(x: torch.Tensor) -> torch.Tensor:
        return x @ w

    real, fake = torch.randn(16, 2), torch.randn(16, 2)
    penalty = gradient_penalty(critic, real, fake)
    assert penalty.item() == pytest.approx((5.0 - 1.0) ** 2)
    penalty.backward()  # differentiable w.r.t. the critic's weights: d/dw (||w|| - 1)^2
    assert torch.allclose(w.grad, 2 * (5.0 - 1.0) * w.detach() / 5.0)


def test_r1_of_a_quadratic_critic_is_mean_squared_norm() -> None:
    def critic(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x.pow(2).sum(dim=1)  # grad = x

    real = torch.tensor([[1.0, 2.0], [0.0, 3.0]])
    assert r1_penalty(critic, real).item() == pytest.approx((1 + 4 + 9) / 2)


def test_penalty_objects_check_their_arguments() -> None:
    with pytest.raises(ValueError, match=r"weight=-1: must be in \[0, inf"):
        R1(weight=-1)
    with pytest.raises(ValueError, match="interval=0: must be >= 1"):
        GradientPenalty(interval=0)
    with pytest.raises(ValueError, match=r"r2_weight=.* reaches -0.5: must be in \[0, inf"):
        R1R2(weight=1.0, r2_weight=Cosine(start=1.0, end=-0.5, iterations=10))


def test_r2_penalises_generated_samples_and_combines_with_r1() -> None:
    def critic(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x.pow(2).sum(dim=1)  # grad = x

    real = torch.tensor([[1.0, 2.0], [0.0, 3.0]])  # mean ||x||^2 = 7
    fake = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # mean ||x||^2 = 1
    assert r2_penalty(critic, fake).item() == pytest.approx(1.0)
    # The objects return the weighted value; R1 and R2 have weights of their own.
    outputs = DiscriminatorPass.of(critic, real, fake)
    assert R2(weight=3.0)(outputs).item() == pytest.approx(3.0 * 1.0)
    assert R1(weight=0.5)(outputs).item() == pytest.approx(0.5 * 7.0)
    value, terms = R1R2(weight=2.0)(outputs)
    assert value.item() == pytest.approx(2.0 * (7.0 + 1.0))
    both, terms = R1R2(weight=2.0, r2_weight=10.0)(outputs)
    assert both.item() == pytest.approx(2.0 * 7.0 + 10.0 * 1.0)
    # Its terms, unweighted, for the logs (d_penalty/r1, d_penalty/r2).
    assert terms["r1"].item() == pytest.approx(7.0) and terms["r2"].item() == pytest.approx(1.0)


def test_r1_reuses_the_update_forward_pass_through_the_augmentation() -> None:
    """The gradient is taken w.r.t. the images before augmentation, from the update's own logits."""
    calls = []

    def critic(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        return 0.5 * x.pow(2).sum(dim=1)

    def judge(x: torch.Tensor) -> torch.Tensor:  # an "augmentation" that doubles the images
        return critic(2 * x)

    real = torch.tensor([[1.0, 2.0], [0.0, 3.0]]).requires_grad_(True)
    fake = torch.zeros(2, 2, requires_grad=True)
    outputs = DiscriminatorPass(judge, real, fake, judge(real), judge(fake))
    # d/dx 0.5 ||2x||^2 = 4x: E||4x||^2 = 16 * 7.
    assert R1(weight=1.0)(outputs).item() == pytest.approx(16 * 7.0)
    assert calls == [2, 2], "no second forward pass"


def test_lecam_pulls_outputs_towards_the_other_side_average() -> None:
    lecam = LeCam(weight=0.5, decay=0.9)

    def judged(real_logits: list[float], fake_logits: list[float]) -> DiscriminatorPass:
        real_t = torch.tensor(real_logits, requires_grad=True)
        fake_t = torch.tensor(fake_logits, requires_grad=True)
        return DiscriminatorPass(lambda x: x, real_t, fake_t, real_t, fake_t)

    # First update: the averages start at this batch's means (real 2, fake -1).
    first = judged([1.0, 3.0], [-1.0, -1.0])
    value = lecam(first)
    # relu(D(x) - a_fake)^2: (1+1)^2, (3+1)^2 -> mean 10; relu(a_real - D(G(z)))^2: 3^2 -> 9.
    assert value.item() == pytest.approx(0.5 * (10.0 + 9.0))
    assert lecam.real_mean.item() == pytest.approx(2.0)
    assert lecam.fake_mean.item() == pytest.approx(-1.0)
    value.backward()
    assert first.real_logits.grad is not None  # it trains the discriminator's outputs
    # Later updates move the averages by 1 - decay.
    lecam(judged([12.0, 12.0], [9.0, 9.0]))
    assert lecam.real_mean.item() == pytest.approx(0.9 * 2.0 + 0.1 * 12.0)
    assert lecam.fake_mean.item() == pytest.approx(0.9 * -1.0 + 0.1 * 9.0, abs=1e-6)
    # The averages are state: saved and loaded with the module's state dict.
    restored = LeCam().to(torch.float16)  # a true-half run casts the module, not this state
    assert restored.real_mean.dtype == torch.float32
    restored.load_state_dict(lecam.state_dict())
    assert restored.real_mean.item() == pytest.approx(lecam.real_mean.item())
    with pytest.raises(ValueError, match=r"decay=1.0: must be in \[0, 1\)"):
        LeCam(decay=1.0)


def test_path_length_is_the_norm_of_the_jacobian_transposed_times_noise_and_tracks_its_mean() -> (
    None
):
    """G(z) = A z: J^T y = A^T y for each sample, with y ~ N(0, I) / sqrt(pixels)."""
    torch.manual_seed(0)
    a = torch.randn(2 * 4 * 4, 3)  # z in R^3 -> a 2-channel 4x4 image

    def generate(z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return (z @ a.T).view(-1, 2, 4, 4)

    def sample_latent(n: int) -> torch.Tensor:
        return torch.randn(n, 3)

    fake = generate(sample_latent(8), None)
    outputs = GeneratorPass(generate, sample_latent, fake, fake.sum((1, 2, 3)), None)
    regularizer = PathLength(weight=2.0, interval=4, decay=0.25, batch_shrink=2)

    torch.manual_seed(1)
    lengths = regularizer.lengths(outputs)
    torch.manual_seed(1)
    sample_latent(4)  # the same draws, in the same order: latents, then the noise
    y = torch.randn(4, 2, 4, 4) / 4.0  # sqrt(16 pixels per channel)
    expected = (y.flatten(1) @ a).norm(dim=1)
    assert lengths.shape == (4,)  # batch 8 / batch_shrink 2
    assert torch.allclose(lengths, expected, rtol=1e-5)

    torch.manual_seed(2)
    value, terms = regularizer(outputs)
    torch.manual_seed(2)
    lengths = regularizer.lengths(outputs).detach()
    mean = 0.25 * lengths.mean()  # the running mean starts at 0, as StyleGAN2's
    assert torch.allclose(terms["mean"], mean)
    assert torch.allclose(value, 2.0 * (lengths - mean).square().mean(), rtol=1e-5)
    assert PathLength.update == "generator" and R1.update == "discriminator"
    with pytest.raises(ValueError, match="decay=0: must be in"):
        PathLength(decay=0)


def test_regularizers_of_both_updates_train_lazily_and_report_their_terms(make_config) -> None:
    """R1 as the penalty, LeCam beside it and path length on the generator: each on its own
    interval, logged under its name, the running mean saved with the module."""
    recorder = StepRecorder()
    cfg = make_config(
        "experiment=dcgan",
        "penalty=r1",
        "penalty.interval=2",
        "regularizers=[path_length,lecam]",
        "regularizers.path_length.interval=3",
        "data.limit=200",
        "train.iterations=6",
    )
    result = run(without_evaluation(cfg), recorder)
    assert result["iteration"] == 6
    outputs = recorder.outputs
    assert [("d_penalty" in out) for out in outputs] == [True, False] * 3
    assert [("g_reg/path_length" in out) for out in outputs] == [True, False, False] * 2
    assert all("d_reg/lecam" in out for out in outputs)
    assert all("g_reg/path_length/mean" in out for out in outputs[::3])
    module = result["module"]
    mean = module.regularizer_state["path_length"].mean
    assert mean > 0 and "regularizer_state.path_length.mean" in module.state_dict()
    assert all(torch.isfinite(v).all() for out in outputs for v in out.values())

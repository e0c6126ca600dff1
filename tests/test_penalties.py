"""Penalties on discriminators whose input gradients are known in closed form."""

from __future__ import annotations

import pytest
import torch

from gan_template.penalties import (
    R1,
    R1R2,
    R2,
    DiscriminatorPass,
    GradientPenalty,
    LeCam,
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
    assert R1R2(weight=2.0)(outputs).item() == pytest.approx(2.0 * (7.0 + 1.0))
    both = R1R2(weight=2.0, r2_weight=10.0)(outputs)
    assert both.item() == pytest.approx(2.0 * 7.0 + 10.0 * 1.0)


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

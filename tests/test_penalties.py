"""Penalties on discriminators whose input gradients are known in closed form."""

from __future__ import annotations

import pytest
import torch

from gan_template.penalties import (
    R1,
    R1R2,
    R2,
    GradientPenalty,
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
    assert R2(weight=3.0)(critic, real, fake).item() == pytest.approx(3.0 * 1.0)
    assert R1(weight=0.5)(critic, real, fake).item() == pytest.approx(0.5 * 7.0)
    assert R1R2(weight=2.0)(critic, real, fake).item() == pytest.approx(2.0 * (7.0 + 1.0))
    both = R1R2(weight=2.0, r2_weight=10.0)(critic, real, fake)
    assert both.item() == pytest.approx(2.0 * 7.0 + 10.0 * 1.0)

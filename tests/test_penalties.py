"""Penalties on discriminators whose input gradients are known in closed form."""

from __future__ import annotations

import pytest
import torch

from gan_template.penalties import get_penalty, gradient_penalty, r1_penalty, r2_penalty


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


def test_penalty_lookup() -> None:
    assert get_penalty("none") is None and get_penalty(None) is None
    assert get_penalty("gradient_penalty") is gradient_penalty
    with pytest.raises(ValueError, match=r"penalty 'gp' is not known.*gradient_penalty"):
        get_penalty("gp")


def test_r2_penalises_generated_samples_and_combines_with_r1() -> None:
    def critic(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x.pow(2).sum(dim=1)  # grad = x

    real = torch.tensor([[1.0, 2.0], [0.0, 3.0]])  # mean ||x||^2 = 7
    fake = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # mean ||x||^2 = 1
    assert r2_penalty(critic, fake).item() == pytest.approx(1.0)
    assert get_penalty("r2")(critic, real, fake).item() == pytest.approx(1.0)
    assert get_penalty("r1_r2")(critic, real, fake).item() == pytest.approx(7.0 + 1.0)

"""Each adversarial loss against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from gan_template.losses import (
    AdversarialLoss,
    Hinge,
    LeastSquares,
    NonSaturating,
    Relativistic,
    Wasserstein,
    discriminator_statistics,
)

LOSSES: dict[str, AdversarialLoss] = {
    "non_saturating": NonSaturating(),
    "hinge": Hinge(),
    "wasserstein": Wasserstein(),
    "least_squares": LeastSquares(),
    "relativistic": Relativistic(),
}

REAL = torch.tensor([2.0, -1.0])
FAKE = torch.tensor([0.5, -3.0])


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


@pytest.mark.parametrize(
    ("name", "d_expected", "g_expected"),
    [
        (
            "non_saturating",
            (softplus(-2.0) + softplus(1.0)) / 2 + (softplus(0.5) + softplus(-3.0)) / 2,
            (softplus(-0.5) + softplus(3.0)) / 2,
        ),
        ("hinge", (0.0 + 2.0) / 2 + (1.5 + 0.0) / 2, -(0.5 - 3.0) / 2),
        ("wasserstein", (0.5 - 3.0) / 2 - (2.0 - 1.0) / 2, -(0.5 - 3.0) / 2),
        (
            "least_squares",
            0.5 * (((2 - 1) ** 2 + (-1 - 1) ** 2) / 2 + (0.5**2 + 3.0**2) / 2),
            0.5 * ((0.5 - 1) ** 2 + (-3 - 1) ** 2) / 2,
        ),
        (  # pairs (2.0, 0.5) and (-1.0, -3.0)
            "relativistic",
            (softplus(0.5 - 2.0) + softplus(-3.0 + 1.0)) / 2,
            (softplus(2.0 - 0.5) + softplus(-1.0 + 3.0)) / 2,
        ),
    ],
)
def test_loss_matches_hand_computed_value(name: str, d_expected: float, g_expected: float) -> None:
    loss = LOSSES[name]
    assert loss.discriminator_loss(REAL, FAKE).item() == pytest.approx(d_expected, rel=1e-6)
    assert loss.generator_loss(FAKE, REAL).item() == pytest.approx(g_expected, rel=1e-6)


def test_every_loss_pushes_real_up_and_fake_down() -> None:
    for name, loss in LOSSES.items():
        # Logits of 0.5 sit inside every loss's active region (LSGAN's fake target is 0).
        real = torch.full((4,), 0.5, requires_grad=True)
        fake = torch.full((4,), 0.5, requires_grad=True)
        loss.discriminator_loss(real, fake).backward()
        assert (real.grad < 0).all() and (fake.grad > 0).all(), name
        fake_g = torch.full((4,), 0.5, requires_grad=True)
        loss.generator_loss(fake_g, real.detach()).backward()
        assert (fake_g.grad < 0).all(), name


def test_every_loss_option_of_conf_builds_its_class() -> None:
    from conftest import REPO_ROOT
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    built = {
        path.stem: instantiate(OmegaConf.load(path))
        for path in sorted((REPO_ROOT / "conf" / "loss").glob("*.yaml"))
    }
    assert {name: type(loss) for name, loss in built.items()} == {
        name: type(loss) for name, loss in LOSSES.items()
    }


def test_discriminator_statistics() -> None:
    stats = discriminator_statistics(REAL.clone().requires_grad_(), FAKE)
    assert stats["d_accuracy_real"].item() == 0.5 and stats["d_accuracy_fake"].item() == 0.5
    assert stats["d_real"].item() == pytest.approx(REAL.mean().item())
    assert stats["d_fake"].item() == pytest.approx(FAKE.mean().item())
    assert not any(value.requires_grad for value in stats.values())


def test_relativistic_loss_pairs_samples_and_needs_the_real_logits() -> None:
    loss = Relativistic()
    assert loss.pairs_real_and_fake
    # Shifting every logit by the same amount changes nothing: only differences count.
    shifted = loss.discriminator_loss(REAL + 7.0, FAKE + 7.0)
    assert shifted.item() == pytest.approx(loss.discriminator_loss(REAL, FAKE).item(), rel=1e-6)
    with pytest.raises(ValueError, match="needs the discriminator's real logits"):
        loss.generator_loss(FAKE, None)

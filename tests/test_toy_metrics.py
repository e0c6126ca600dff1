"""The PacGAN mode-coverage metric on samples whose answer is known."""

from __future__ import annotations

import math

import pytest
import torch

from gan_template.data.toy import mixture_modes, sample_mixture
from gan_template.metrics.toy import mode_coverage


@pytest.mark.parametrize(("name", "k"), [("ring", 8), ("grid", 25)])
def test_samples_from_the_data_cover_every_mode(name: str, k: int) -> None:
    modes, std = mixture_modes(name)
    result = mode_coverage(sample_mixture(name, 2500, torch.Generator().manual_seed(0)), modes, std)
    assert result.modes_captured == k and result.num_modes == k
    # P(||x - mode|| <= 3 std) for a 2-D Gaussian is 1 - exp(-9/2) = 0.989.
    assert result.high_quality == pytest.approx(1 - math.exp(-4.5), abs=0.01)
    assert result.reverse_kl < 0.05


def test_collapse_onto_one_mode_scores_one_mode_and_log_k() -> None:
    modes, std = mixture_modes("ring")
    samples = modes[3] + std * 0.1 * torch.randn(2500, 2)
    result = mode_coverage(samples, modes, std)
    assert result.modes_captured == 1
    assert result.high_quality == 1.0
    assert result.reverse_kl == pytest.approx(math.log(8))


def test_samples_between_modes_are_not_high_quality() -> None:
    modes, std = mixture_modes("ring")
    half = (modes[0] + modes[1]) / 2  # 0.38 away from both modes: far beyond 3 std
    samples = torch.cat([half.expand(500, 2), modes[:4].repeat(125, 1)])
    result = mode_coverage(samples, modes, std)
    assert result.high_quality == pytest.approx(0.5)
    assert result.modes_captured == 4
    assert result.reverse_kl == pytest.approx(math.log(2))


def test_no_high_quality_sample_gives_infinite_kl() -> None:
    modes, std = mixture_modes("grid")
    result = mode_coverage(torch.full((10, 2), 100.0), modes, std)
    assert (
        result.modes_captured == 0 and result.high_quality == 0.0 and math.isinf(result.reverse_kl)
    )

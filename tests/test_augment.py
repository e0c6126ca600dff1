"""DiffAugment: differentiable, seeded, drawn afresh per call; small-data subsets; the R3GAN pieces in a run."""

from __future__ import annotations

import pytest
import torch
from helpers import StepRecorder, run, without_evaluation

from gan_template.augment import POLICIES, DiffAugment, cutout, translation
from gan_template.data.images import ImageDataModule


def images(n: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("policy", [*POLICIES, "color,translation,cutout"])
def test_gradients_flow_through_every_policy_to_the_generator(policy: str) -> None:
    generator = torch.nn.Linear(4, 3 * 16 * 16)
    fake = generator(torch.randn(8, 4)).view(8, 3, 16, 16)
    DiffAugment(policy)(fake).square().sum().backward()
    assert generator.weight.grad is not None and generator.weight.grad.abs().sum() > 0


def test_the_same_seed_gives_the_same_augmentation() -> None:
    augment = DiffAugment("color,translation,cutout")
    torch.manual_seed(3)
    first = augment(images())
    torch.manual_seed(3)
    assert torch.equal(augment(images()), first)


def test_real_and_fake_batches_get_independent_draws() -> None:
    augment = DiffAugment("translation,cutout")
    same = images()
    torch.manual_seed(0)
    real, fake = augment(same), augment(same)  # two calls, as for the real and the fake batch
    assert not torch.equal(real, fake)


def test_translation_shifts_and_fills_with_zeros() -> None:
    x = torch.ones(64, 1, 8, 8)
    shifted = translation(x, ratio=0.25)  # up to 2 pixels
    zeros_per_image = (shifted == 0).flatten(1).sum(1)
    assert zeros_per_image.max() > 0 and zeros_per_image.max() <= 8 * 8 - 6 * 6
    assert set(shifted.unique().tolist()) <= {0.0, 1.0}


def test_cutout_zeroes_one_square_of_the_chosen_size() -> None:
    x = torch.ones(16, 3, 8, 8)
    assert ((cutout(x, ratio=0.5) == 0).flatten(1).sum(1) == 3 * 4 * 4).all()


def test_unknown_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="policy='colour'"):
        DiffAugment("colour")


def test_a_limited_dataset_is_a_fixed_subset_and_metrics_see_every_image() -> None:
    first = ImageDataModule("digits", resolution=8, limit=200, data_seed=1)
    again = ImageDataModule("digits", resolution=8, limit=200, data_seed=1)
    other = ImageDataModule("digits", resolution=8, limit=200, data_seed=2)
    for module in (first, again, other):
        module.setup("fit")
    assert len(first.dataset) == 200 and len(first.evaluation_dataset) == 1797
    assert torch.equal(first.dataset.tensors[0], again.dataset.tensors[0])
    assert not torch.equal(first.dataset.tensors[0], other.dataset.tensors[0])
    real, _ = first.real_samples(1000)
    assert len(real) == 1000  # drawn from all 1,797 images


def test_augmented_relativistic_r1_r2_recipe_trains(make_config) -> None:
    recorder = StepRecorder()
    cfg = make_config(
        "experiment=dcgan",
        "augment=diffaugment",
        "loss=relativistic",
        "penalty=r1_r2",
        "penalty.interval=2",
        "data.limit=200",
        "train.iterations=4",
    )
    result = run(without_evaluation(cfg), recorder)
    assert result["iteration"] == 4
    assert all("d_penalty" in out for out in recorder.outputs[::2])  # lazy: every 2nd update
    # The penalty reports its own terms, unweighted (R3GAN logs R1 and R2 apart).
    assert all({"d_penalty/r1", "d_penalty/r2"} <= out.keys() for out in recorder.outputs[::2])
    assert all(torch.isfinite(v).all() for out in recorder.outputs for v in out.values())

"""Image networks: every supported size, conditional mode, and clear errors for the rest."""

from __future__ import annotations

import pytest
import torch

from gan_template.models.dcgan import DCGANDiscriminator, DCGANGenerator
from gan_template.models.resnet import ResNetDiscriminator, ResNetGenerator

FAMILIES = [(DCGANGenerator, DCGANDiscriminator), (ResNetGenerator, ResNetDiscriminator)]


@pytest.mark.parametrize(("generator_cls", "discriminator_cls"), FAMILIES)
@pytest.mark.parametrize("resolution", [16, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_generator_output_fits_discriminator(
    generator_cls, discriminator_cls, resolution: int, channels: int
) -> None:
    generator = generator_cls(latent_dim=8, channels=channels, resolution=resolution, width=8)
    discriminator = discriminator_cls(channels=channels, resolution=resolution, width=8)
    images = generator(torch.randn(2, 8))
    assert images.shape == (2, channels, resolution, resolution)
    assert images.abs().max() <= 1.0  # tanh range, like the data
    assert discriminator(images).shape == (2,)


@pytest.mark.parametrize(("generator_cls", "discriminator_cls"), FAMILIES)
def test_conditional_networks_use_the_labels(generator_cls, discriminator_cls) -> None:
    torch.manual_seed(0)
    generator = generator_cls(
        latent_dim=8, channels=1, resolution=16, width=8, num_classes=10
    ).eval()
    discriminator = discriminator_cls(channels=1, resolution=16, width=8, num_classes=10)
    z = torch.randn(1, 8).expand(2, -1)
    images = generator(z, torch.tensor([0, 1]))
    assert not torch.allclose(images[0], images[1])  # same noise, different class
    same = images[:1].expand(2, -1, -1, -1)
    logits = discriminator(same, torch.tensor([0, 1]))
    assert logits[0] != logits[1]  # the projection term depends on the label
    with pytest.raises(ValueError, match="class-conditional: pass labels"):
        generator(z)


def test_spectral_norm_bounds_the_discriminator_layers() -> None:
    discriminator = DCGANDiscriminator(channels=1, resolution=16, width=8, spectral_norm=True)
    for _ in range(20):  # power iterations converge in train mode
        discriminator(torch.randn(4, 1, 16, 16))
    first = discriminator.features[0]
    sigma = torch.linalg.matrix_norm(first.weight.detach().flatten(1), ord=2).item()
    assert sigma == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("resolution", [28, 12, 4])
def test_unsupported_resolution_names_the_value_and_the_fix(resolution: int) -> None:
    with pytest.raises(
        ValueError, match=rf"resolution={resolution} is not supported.*data.resolution"
    ):
        DCGANGenerator(resolution=resolution)


def test_mlp_generator_batch_norm_option() -> None:
    from gan_template.models.mlp import MLPGenerator

    plain, normed = MLPGenerator(depth=3), MLPGenerator(depth=3, batch_norm=True)
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in normed.modules()) == 3
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in plain.modules())
    assert normed(torch.randn(8, 2)).shape == plain(torch.randn(8, 2)).shape == (8, 2)

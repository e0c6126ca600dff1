"""R3GAN's networks (models/r3gan.py), the latent walks, adaptive augmentation and the EMA half-life."""

from __future__ import annotations

import ast
import inspect
import math

import pytest
import torch
import torch.nn.functional as F

from gan_template import models
from gan_template.augment import AdaptiveAugment, DiffAugment
from gan_template.ema import GeneratorEMA
from gan_template.models import r3gan
from gan_template.models.r3gan import (
    R3GANDiscriminator,
    R3GANGenerator,
    Resample,
    ResidualBlock,
    lowpass_kernel,
)
from gan_template.schedule import Linear

SMALL = {"widths": 16, "blocks": 1, "cardinality": 4}


@pytest.mark.parametrize("resolution", [16, 32, 64, 128, 256])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_at_every_resolution(resolution: int, channels: int) -> None:
    g = R3GANGenerator(latent_dim=8, channels=channels, resolution=resolution, **SMALL)
    d = R3GANDiscriminator(channels=channels, resolution=resolution, **SMALL)
    images = g(torch.randn(2, 8))
    assert images.shape == (2, channels, resolution, resolution)
    assert d(images).shape == (2,)
    assert g.sample_shape == d.sample_shape == (channels, resolution, resolution)


def test_conditional_networks_use_the_labels() -> None:
    g = R3GANGenerator(latent_dim=8, channels=3, resolution=16, num_classes=5, **SMALL)
    d = R3GANDiscriminator(channels=3, resolution=16, num_classes=5, **SMALL)
    z = torch.randn(4, 8)
    with torch.no_grad():  # the zero-initialised residuals would hide the labels at first
        for p in [*g.parameters(), *d.parameters()]:
            p.add_(0.1 * torch.randn_like(p))
    a, b = torch.zeros(4, dtype=torch.long), torch.full((4,), 3)
    assert not torch.allclose(g(z, a), g(z, b))
    x = g(z, a)
    assert d(x, a).shape == (4,) and not torch.allclose(d(x, a), d(x, b))
    with pytest.raises(ValueError, match="class-conditional"):
        g(z)
    with pytest.raises(ValueError, match="class-conditional"):
        d(x)


def test_every_residual_block_is_the_identity_at_initialisation() -> None:
    g = R3GANGenerator(latent_dim=8, channels=3, resolution=32, widths=32, blocks=2, cardinality=8)
    d = R3GANDiscriminator(channels=3, resolution=32, widths=32, blocks=2, cardinality=8)
    blocks = [m for net in (g, d) for m in net.modules() if isinstance(m, ResidualBlock)]
    assert len(blocks) == 2 * 4 * 2  # both networks, 4 stages (4..32 px), 2 blocks each
    x = torch.randn(3, 32, 8, 8)
    for block in blocks:
        assert torch.equal(block(x), x)
        assert torch.count_nonzero(block.project.weight) == 0


def test_initialisation_scales_the_block_gain_by_blocks_to_the_minus_quarter() -> None:
    torch.manual_seed(0)
    block = ResidualBlock(channels=64, cardinality=8, expansion=2, total_blocks=16)
    fan_in = block.expand.weight[0].numel()
    gain = math.sqrt(2 / (1 + 0.2**2)) * 16 ** (-1 / 4)
    assert block.expand.weight.std().item() == pytest.approx(gain / math.sqrt(fan_in), rel=0.05)


def test_the_resampling_filter_passes_constants_and_stops_the_nyquist_frequency() -> None:
    kernel = lowpass_kernel((1, 2, 1))
    assert torch.allclose(kernel * 64, torch.outer(*(torch.tensor([1.0, 3, 3, 1]),) * 2))
    assert kernel.sum().item() == pytest.approx(1.0)
    down, up = Resample(2, up=False), Resample(2, up=True)
    constant = torch.full((1, 2, 16, 16), 3.0)
    assert torch.allclose(down(constant)[..., 1:-1, 1:-1], torch.tensor(3.0))
    assert torch.allclose(up(constant)[..., 2:-2, 2:-2], torch.tensor(3.0))  # mean kept
    checkerboard = (torch.arange(16).view(-1, 1) + torch.arange(16)).remainder(2) * 2.0 - 1
    assert down(checkerboard.expand(1, 2, 16, 16))[..., 1:-1, 1:-1].abs().max() < 1e-6
    # Upsampled images hold no energy at the new Nyquist frequency either: the alternating
    # sum of each row vanishes (an input away from the borders, so no edge is cut off).
    x = F.pad(torch.randn(1, 2, 8, 8), [4, 4, 4, 4])
    alternating = (-1.0) ** torch.arange(32)
    assert (up(x) * alternating).sum(dim=-1).abs().max() < 1e-5


def test_no_operator_outside_plain_pytorch() -> None:
    imported = set()
    for node in ast.walk(ast.parse(inspect.getsource(r3gan))):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= {"__future__", "math", "collections", "torch", "gan_template"}, imported
    # Runs in float64: no fused or half-precision kernels assumed.
    g = R3GANGenerator(latent_dim=8, channels=1, resolution=16, **SMALL).double()
    assert g(torch.randn(2, 8, dtype=torch.float64)).dtype == torch.float64


def test_sizes_per_stage_are_checked_with_the_fix() -> None:
    with pytest.raises(
        ValueError, match=r"widths=\[16, 16\] has 2 entries but resolution 32 has 4"
    ):
        R3GANGenerator(resolution=32, widths=[16, 16])
    with pytest.raises(ValueError, match="cardinality=3 does not divide the inner width 32"):
        R3GANDiscriminator(resolution=16, widths=16, cardinality=3)
    with pytest.raises(ValueError, match="resolution=24 is not supported"):
        R3GANGenerator(resolution=24)
    # Per-stage lists, 4x4 first, fit both networks.
    g = R3GANGenerator(latent_dim=8, channels=1, resolution=16, widths=[32, 16, 8], cardinality=2)
    d = R3GANDiscriminator(channels=1, resolution=16, widths=[32, 16, 8], cardinality=2)
    assert d(g(torch.randn(2, 8))).shape == (2,)


def test_width_max_doubles_the_widths_per_lower_stage_and_keeps_the_group_width() -> None:
    g = R3GANGenerator(latent_dim=8, channels=1, resolution=32, widths=8, cardinality=2,
                       width_max=32)  # fmt: skip
    stages = [[b for b in stage if isinstance(b, ResidualBlock)] for stage in g.stages]
    assert [s[0].expand.in_channels for s in stages] == [32, 32, 16, 8]  # 4x4 first
    assert [s[0].spatial.groups for s in stages] == [8, 8, 4, 2]
    d = R3GANDiscriminator(channels=1, resolution=32, widths=8, cardinality=2, width_max=32)
    assert d(g(torch.randn(2, 8))).shape == (2,)
    with pytest.raises(ValueError, match="width_max=24 must be a multiple of widths=16"):
        R3GANGenerator(resolution=16, widths=16, width_max=24)
    with pytest.raises(ValueError, match="not lists"):
        R3GANGenerator(resolution=16, widths=[32, 16, 8], width_max=32)


def test_r1_through_the_networks_is_differentiable_twice() -> None:
    """R1 and R2 differentiate the discriminator's input gradient: its ops must support that."""
    d = R3GANDiscriminator(channels=1, resolution=16, **SMALL)
    x = torch.randn(4, 1, 16, 16, requires_grad=True)
    (gradient,) = torch.autograd.grad(d(x).sum(), x, create_graph=True)
    gradient.pow(2).sum().backward()
    assert all(p.grad is not None for p in d.parameters())


def test_slerp_keeps_the_ends_and_walks_the_sphere() -> None:
    a, b = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    t = torch.linspace(0, 1, 5).view(-1, 1)
    path = models.slerp(a, b, t)
    assert torch.allclose(path[0], a[0]) and torch.allclose(path[-1], b[0])
    assert torch.allclose(path.norm(dim=1), torch.tensor(2.0))  # on the circle, not the chord
    assert torch.allclose(path[2], torch.tensor([math.sqrt(2), math.sqrt(2)]))
    same = models.slerp(a, a, t)  # parallel ends: no division by sin(0)
    assert torch.isfinite(same).all() and torch.allclose(same, a.expand(5, -1))


def test_latent_walks_give_rows_of_steps_and_class_rows() -> None:
    g = R3GANGenerator(latent_dim=8, channels=1, resolution=16, num_classes=3, **SMALL)
    noise, labels = models.latent_walks(g, rows=4, steps=6, seed=1)
    assert noise.shape == (24, 8)
    assert labels is not None and labels.view(4, 6).T.eq(torch.tensor([0, 1, 2, 0])).all()
    again, _ = models.latent_walks(g, rows=4, steps=6, seed=1)
    assert torch.equal(noise, again)
    with pytest.raises(ValueError, match="steps >= 2"):
        models.latent_walks(g, rows=1, steps=1)


def test_augmentation_probability_applies_each_transform_to_that_share_of_images() -> None:
    images = torch.zeros(4000, 1, 8, 8)
    torch.manual_seed(0)
    none = DiffAugment("color", probability=0.0)(images)
    assert torch.equal(none, images)
    torch.manual_seed(0)
    # On constant grey images only brightness changes anything (saturation and contrast
    # scale distances from a mean that every pixel equals), so 30% of them change.
    some = DiffAugment("color", probability=0.3)(images + 0.5)
    changed = (some - 0.5).flatten(1).abs().amax(dim=1) > 1e-6
    assert changed.float().mean().item() == pytest.approx(0.3, abs=0.03)
    always = DiffAugment("color")(images + 0.5)  # probability 1: every image
    assert ((always - 0.5).flatten(1).abs().amax(dim=1) > 1e-6).all()
    with pytest.raises(ValueError, match=r"probability=1.5: must be in \[0, 1\]"):
        DiffAugment(probability=1.5)


def test_adaptive_augmentation_follows_the_discriminator_overfitting() -> None:
    ada = AdaptiveAugment(target=0.6, interval=4, speed_images=1000)
    sure = torch.full((50,), 3.0)  # D is sure of every real image: r_t = 1 > 0.6
    for update in range(3):
        ada.observe(sure, update)
        assert ada.p.item() == 0.0  # no adjustment before the 4th update
    logged = ada.observe(sure, 3)
    assert ada.p.item() == pytest.approx(200 / 1000)  # 4 batches of 50 images
    assert logged["augment_p"].item() == pytest.approx(0.2)
    unsure = torch.tensor([1.0, -1.0] * 25)  # r_t = 0 < 0.6: p falls, and stops at 0
    for update in range(4, 16):
        ada.observe(unsure, update)
    assert ada.p.item() == 0.0
    ada.observe(torch.full((50,), float("nan")), 16)  # a NaN batch counts as no signs
    assert torch.isfinite(ada.signs).all()
    # p and the running sums are its state: they resume with the module.
    restored = AdaptiveAugment(target=0.6, interval=4, speed_images=1000)
    ada.p.fill_(0.35)
    restored.load_state_dict(ada.state_dict())
    assert restored.p.item() == pytest.approx(0.35) and torch.equal(restored.signs, ada.signs)
    images = torch.randn(8, 1, 8, 8)
    assert restored(images).shape == images.shape
    # bf16-true casts the module: p must still move by steps far below bfloat16's spacing.
    assert restored.to(torch.bfloat16).p.dtype == torch.float32
    with pytest.raises(ValueError, match=r"target=1\.0: must be in"):
        AdaptiveAugment(target=1.0)


def test_ema_half_life_sets_the_decay() -> None:
    g = torch.nn.Linear(2, 2)
    ema = GeneratorEMA(g, half_life=10.0)
    assert ema.decay_at(1) == pytest.approx(0.5 ** (1 / 10))
    assert GeneratorEMA(g, half_life=0.0).decay_at(5) == 0.0
    ramped = GeneratorEMA(g, half_life=Linear(start=0.0, end=100.0, iterations=10))
    assert ramped.decay_at(1) == 0.0  # the module sets the schedule's value before each iteration
    with pytest.raises(ValueError, match="half_life"):
        GeneratorEMA(g, half_life=-1.0)


def test_identity_blocks_make_the_initial_generator_a_linear_map_of_z() -> None:
    g = R3GANGenerator(latent_dim=8, channels=1, resolution=16, **SMALL)
    z = torch.randn(3, 8)
    assert torch.allclose(g(2 * z), 2 * g(z), atol=1e-5)
    assert F.mse_loss(g(z), g(-z), reduction="sum") > 0


def test_the_basis_input_varies_only_channel_gains_and_the_linear_one_each_position() -> None:
    """What the two input layers let z change in the 4x4 tensor (benchmarks/README.md, "R3GAN's recall")."""
    torch.manual_seed(0)
    z = torch.randn(256, 8)
    first = {}
    for kind in ("basis", "linear"):
        g = R3GANGenerator(latent_dim=8, channels=1, resolution=16, input_layer=kind, **SMALL)
        g.stages[0].register_forward_hook(
            lambda _m, args, _out, kind=kind: first.__setitem__(kind, args[0])
        )
        assert g(z).shape == (256, 1, 16, 16)
        assert first[kind].shape == (256, 16, 4, 4)
        assert first[kind].std().item() == pytest.approx(1.0, abs=0.2)  # unit variance, as R3GAN's
    # basis: one z over another is one number per channel, the same at every position
    ratio = first["basis"][0] / first["basis"][1]
    assert torch.allclose(ratio, ratio[:, :1, :1].expand_as(ratio), rtol=1e-4)
    ratio = first["linear"][0] / first["linear"][1]
    assert not torch.allclose(ratio, ratio[:, :1, :1].expand_as(ratio), rtol=1e-2)
    with pytest.raises(ValueError, match=r"input_layer='dense'.*'basis'.*'linear'"):
        R3GANGenerator(input_layer="dense")


def test_torch_compile_captures_both_networks_whole_but_not_a_double_backward() -> None:
    """fullgraph: no graph breaks. R1/R2 differentiate twice, which compiled graphs refuse
    (torch 2.x): so the module compiles the discriminator only without a penalty."""
    torch.manual_seed(0)
    g = R3GANGenerator(latent_dim=8, channels=1, resolution=16, **SMALL)
    d = R3GANDiscriminator(channels=1, resolution=16, **SMALL)
    compiled_g = torch.compile(g, backend="aot_eager", fullgraph=True)
    compiled_d = torch.compile(d, backend="aot_eager", fullgraph=True)
    z = torch.randn(4, 8)
    torch.testing.assert_close(compiled_d(compiled_g(z)), d(g(z)))
    compiled_d(compiled_g(z)).sum().backward()
    assert all(p.grad is not None for p in g.parameters())
    x = torch.randn(4, 1, 16, 16, requires_grad=True)
    with pytest.raises(RuntimeError, match="create_graph=False"):
        (gradient,) = torch.autograd.grad(compiled_d(x).sum(), x, create_graph=True)
        gradient.pow(2).sum().backward()

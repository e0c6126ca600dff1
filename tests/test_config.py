"""Every config file composes; every experiment trains a few iterations on the CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
import torch
from conftest import CONFIG_DIR
from helpers import run
from omegaconf import OmegaConf

GROUPS = sorted(p.name for p in CONFIG_DIR.iterdir() if p.is_dir() and p.name != "hydra")
OPTIONS = [(group, p.stem) for group in GROUPS for p in sorted((CONFIG_DIR / group).glob("*.yaml"))]
#: R3GAN's own configurations: GPU-sized networks on data that is not embedded.
GPU_EXPERIMENTS = {"r3gan_cifar10": (3, 32, 10), "r3gan_ffhq64": (3, 64, 0)}
#: The latent GAN needs an autoencoder checkpoint first (tests/test_tasks.py trains one).
NEEDS_A_CHECKPOINT = {"latent_gan_digits"}
EXPERIMENTS = [
    p.stem
    for p in sorted((CONFIG_DIR / "experiment").glob("*.yaml"))
    if p.stem not in GPU_EXPERIMENTS and p.stem not in NEEDS_A_CHECKPOINT
]
#: Options of the image-to-image tasks and the latent GAN compose inside their recipes.
TASK_OPTIONS = {
    ("model", "pix2pix"): ["experiment=pix2pix_digits"],
    ("data", "paired_digits"): ["experiment=pix2pix_digits"],
    ("data", "paired_folder"): ["experiment=pix2pix_digits", "data.root=/some/pairs"],
    ("callbacks", "translation"): ["experiment=pix2pix_digits"],
    ("task", "paired"): ["experiment=pix2pix_digits"],
    ("model", "autoencoder"): ["experiment=autoencoder_digits"],
    ("task", "autoencoder"): ["experiment=autoencoder_digits"],
    ("data", "latents"): ["experiment=latent_gan_digits", "data.autoencoder=/some/last.ckpt"],
}


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_config_option_composes_and_resolves(make_config, group: str, option: str) -> None:
    # Compose each option inside a recipe of its kind (toy options with the toy recipe).
    toy = (group, option) in {
        ("data", "ring"),
        ("data", "grid"),
        ("model", "mlp"),
        ("callbacks", "toy"),
    }
    extra = ["data.root=/some/images"] if (group, option) == ("data", "folder") else []
    recipe = ["experiment=ring" if toy else "experiment=dcgan"]
    if (group, option) in TASK_OPTIONS:
        recipe, extra = TASK_OPTIONS[group, option][:1], TASK_OPTIONS[group, option][1:]
    cfg = make_config(*recipe, f"{group}={option}", *extra, fast=False)
    OmegaConf.resolve(cfg)  # interpolations point at keys that exist
    assert cfg.train.iterations >= 1


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_trains_a_few_iterations(make_config, experiment: str) -> None:
    toy = experiment in ("ring", "grid")
    smaller = "data.num_samples=4096" if toy else "callbacks.image_eval.num_samples=256"
    if experiment in ("pix2pix_digits", "autoencoder_digits"):
        smaller = "callbacks.translation.num_pairs=64"
    # One iteration runs every update of the recipe (n_critic of them), its callbacks and saves.
    cfg = make_config(f"experiment={experiment}", "train.iterations=1", smaller)
    result = run(cfg)
    assert result["iteration"] == 1
    run_dir = Path(cfg.paths.run_dir)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "metrics.csv").is_file()


@pytest.mark.parametrize("experiment", sorted(GPU_EXPERIMENTS))
def test_gpu_sized_experiments_build_their_networks(make_config, experiment: str) -> None:
    """Composed, validated, and the networks built (shapes only, on the meta device)."""
    from gan_template.harness.train import build_network

    channels, resolution, classes = GPU_EXPERIMENTS[experiment]
    cfg = make_config(f"experiment={experiment}", "data.root=/some/images", fast=False)
    OmegaConf.resolve(cfg)
    with torch.device("meta"):
        g = build_network(cfg, "generator", classes)
        d = build_network(cfg, "discriminator", classes)
        labels = torch.zeros(2, dtype=torch.long) if classes else None
        images = g(torch.randn(2, cfg.model.generator.latent_dim), labels)
        assert images.shape == (2, channels, resolution, resolution)
        assert d(images, labels).shape == (2,)
    size = sum(p.numel() for p in [*g.parameters(), *d.parameters()])
    assert size > 20_000_000, size  # R3GAN's scale, not the digits'


def test_per_stage_lists_pass_the_type_check_through_interpolations(make_config) -> None:
    """model.discriminator.widths is ${model.generator.widths}: a list once resolved."""
    from gan_template.harness.config import validate
    from gan_template.harness.errors import ConfigError

    cfg = make_config("experiment=r3gan", "model.generator.widths=[32,32,16]", fast=False)
    validate(cfg)  # no "must be an integer or a list of integers"
    bad = make_config("experiment=r3gan", "model.generator.widths=[32,wide,16]", fast=False)
    with pytest.raises(ConfigError, match=r"widths=.*must be an integer or a list of integers"):
        validate(bad)


def test_every_yaml_file_starts_with_a_comment_saying_what_it_configures() -> None:
    for path in CONFIG_DIR.rglob("*.yaml"):
        lines = path.read_text().splitlines()
        first = lines[1] if lines[0].startswith("# @package") else lines[0]
        assert first.startswith("# "), path


def test_mismatched_data_and_network_shapes_fail_at_start_naming_both(make_config) -> None:
    cfg = make_config("experiment=ring", "train.iterations=1", "model.generator.data_dim=3")
    with pytest.raises(
        ValueError, match=r"generator produces samples of shape \(3,\).*shape \(2,\)"
    ):
        run(cfg)


def test_a_logger_whose_package_is_missing_is_refused_with_the_install_command(
    make_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    from gan_template.harness.config import validate
    from gan_template.harness.errors import ConfigError

    cfg = make_config("logger=wandb")
    validate(cfg)  # installed here (dev extra)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "wandb" else find_spec(name, *a),
    )
    with pytest.raises(ConfigError, match=r'needs the wandb package.*pip install -e "\.\[wandb\]"'):
        validate(cfg)


def test_integer_betas_are_accepted(make_config) -> None:
    # `betas=[0,0.99]` (R3GAN's and StyleGAN's beta1 = 0) gives YAML an int, which torch's
    # Adam refuses with a traceback unless the template converts it.
    from gan_template.harness.train import build_module

    cfg = make_config("experiment=ring", "optim.generator.betas=[0,0.99]")
    module = build_module(cfg)
    optimizer = module.make_optimizer["generator"](module.generator.parameters())
    betas = optimizer.param_groups[0]["betas"]
    assert tuple(betas) == (0.0, 0.99) and all(type(b) is float for b in betas)


def annotated(
    count: int,
    scale: float,
    name: str,
    flag: bool,
    maybe: int | None,
    sizes: list[int],
    pair: tuple[float, float],
    mode: Literal["a", "b"],
    anything: object,
) -> None:
    """A callable whose annotations the config check reads."""


@pytest.mark.parametrize(
    ("key", "good", "bad", "message"),
    [
        ("count", 3, 3.5, "must be an integer"),
        ("count", 3, True, "must be an integer"),
        ("scale", 1, "x", "must be a number"),
        ("name", "ok", 1, "must be a string"),
        ("flag", False, "no", "must be true or false"),
        ("maybe", None, "x", "must be an integer or null"),
        ("sizes", [1, 2], [1, "x"], "must be a list of integers"),
        ("pair", [0, 0.9], [0.5], "must be a list of 2 numbers"),
        ("mode", "a", "c", "must be one of 'a', 'b'"),
    ],
)
def test_target_values_are_checked_against_annotations(key, good, bad, message) -> None:
    from gan_template.harness.config import _type_problems

    assert _type_problems("x", OmegaConf.create({key: good}), annotated) == []
    (problem,) = _type_problems("x", OmegaConf.create({key: bad}), annotated)
    assert problem.startswith(f"x.{key}=") and message in problem, problem
    # Types the check does not model are left to the callable.
    assert _type_problems("x", OmegaConf.create({"anything": "x"}), annotated) == []


def test_the_multinode_trainer_takes_the_cpu_as_the_readme_overrides_it(make_config) -> None:
    """``trainer=ddp_multinode trainer.accelerator=cpu``: one process per node (devices: auto)."""
    import lightning as L
    from hydra.utils import instantiate

    cfg = make_config("trainer=ddp_multinode", "trainer.accelerator=cpu", "trainer.num_nodes=1")
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[])
    assert isinstance(trainer, L.Trainer) and trainer.num_devices == 1

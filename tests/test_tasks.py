"""The image-to-image tasks (gan_template/tasks/): pix2pix and the adversarial autoencoder.

Each trains from its recipe and resumes exactly, the autoencoder's discriminator
waits for its start iteration, Esser's adaptive weight is checked against a hand
computation (and across 2 processes), and bad input is named. The 2-process DDP
runs of both recipes are in the slow suite (test_tasks_under_ddp below).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from helpers import run, same_tensors
from lightning.pytorch.callbacks import Callback
from PIL import Image

from gan_template.data.paired import PairedImageDataModule
from gan_template.harness.errors import ConfigError, DataError
from gan_template.tasks.image_to_image import adaptive_weight

ROOT = Path(__file__).resolve().parents[1]
# The smallest runs that show each behaviour: 128 pairs, batches of 16, narrow networks.
TINY = [
    "data.limit=128",
    "data.batch_size=16",
    "model.generator.width=8",
    "model.discriminator.width=8",
    "callbacks=default",
    "trainer.deterministic=true",
]
#: The autoencoder at 16 px (its recipe trains at 32).
TINY_AE = [*TINY, "data.resolution=16", "model.discriminator.layers=2"]


def test_adaptive_weight_is_the_ratio_of_the_gradient_norms_at_the_last_layer() -> None:
    """y = w . x: rec = (y - t)^2 has gradient 2 (y - t) x at w, adv = -y has -x."""
    x, t = torch.tensor([1.0, 2.0, 2.0]), torch.tensor(0.5)
    w = torch.tensor([0.3, -0.1, 0.4], requires_grad=True)
    y = w @ x
    rec, adv = (y - t) ** 2, -y
    by_hand = abs(2 * (y.item() - t.item())) * 3.0 / (3.0 + 1e-4)  # |x| = 3
    weight = adaptive_weight(rec, adv, w)
    assert weight.requires_grad is False and weight.dim() == 0
    assert weight.item() == pytest.approx(by_hand, rel=1e-6)
    # Clamped: an adversarial gradient of zero gives max_weight, not infinity.
    assert adaptive_weight(rec, 0 * y, w, max_weight=50.0).item() == 50.0


def test_adaptive_weight_under_bf16_autocast_matches_float32() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.SiLU(),
                              torch.nn.Conv2d(8, 3, 3, padding=1))  # fmt: skip
    images, target = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)

    def weight() -> float:
        out = net(images)
        return adaptive_weight((out - target).abs().mean(), -out.mean(), net[2].weight).item()

    exact = weight()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = weight()
    assert mixed == pytest.approx(exact, rel=0.03)


def _adaptive_weight_rank(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)  # fmt: skip
    torch.manual_seed(0)
    layer = torch.nn.Linear(5, 3)
    x = torch.randn(2 * world, 5)[rank * 2 : rank * 2 + 2]  # each rank its own half
    y = layer(x)
    value = adaptive_weight((y - 1).pow(2).mean(), -y.mean(), layer.weight)
    torch.save(value, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_adaptive_weight_under_ddp_is_the_global_batchs(tmp_path: Path) -> None:
    """Two gloo processes, each with half the batch, both use the weight a single process
    computes from the whole batch's gradients (summed halves: the ratio of the means)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_adaptive_weight_rank, args=(2, port, str(tmp_path)), nprocs=2)
    weights = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    torch.manual_seed(0)
    layer = torch.nn.Linear(5, 3)
    x = torch.randn(4, 5)
    rec_grad = sum(torch.autograd.grad((layer(h) - 1).pow(2).mean(), layer.weight)[0]
                   for h in x.split(2))  # fmt: skip
    adv_grad = sum(torch.autograd.grad(-layer(h).mean(), layer.weight)[0] for h in x.split(2))
    expected = rec_grad.norm() / (adv_grad.norm() + 1e-4)
    assert torch.equal(weights[0], weights[1])
    assert weights[0].item() == pytest.approx(expected.item(), rel=1e-5)


def _weights_digest(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode() + tensor.detach().numpy().tobytes())
    return digest.hexdigest()


class DiscriminatorWatch(Callback):
    """The discriminator's weights (as a digest) after every iteration."""

    def __init__(self) -> None:
        self.digests: list[str] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        self.digests.append(_weights_digest(pl_module.discriminator))


def test_pix2pix_resumes_exactly(make_config) -> None:
    """3 iterations (one skipped), a resume to 6, equal 6 straight, bit for bit (with the
    generator's EMA, which pix2pix does not use by default); the EMA translates."""
    common = ["experiment=pix2pix_digits", *TINY, "skip.inject_nonfinite_at=[1,4]", "ema=default"]
    straight = run(make_config(*common, "train.iterations=6", run_dir=make_config.new_run_dir()))
    first_dir = make_config.new_run_dir()
    run(make_config(*common, "train.iterations=3", run_dir=first_dir))
    resumed = run(
        make_config(*common, "train.iterations=6",
                    f"ckpt_path={first_dir / 'checkpoints' / 'last.ckpt'}", run_dir=first_dir)
    )  # fmt: skip
    a, b = straight["module"], resumed["module"]
    assert a.iteration == b.iteration == 6 and b.skip_rule.total == 2
    assert same_tensors(a.state_dict(), b.state_dict())
    assert a.discriminator_updates == b.discriminator_updates == 6
    assert a.translate(torch.zeros(3, 1, 16, 16)).shape == (3, 1, 16, 16)


def test_the_autoencoders_discriminator_waits_for_its_start(make_config) -> None:
    """No discriminator step (nor run) before discriminator_start; the iterations still count,
    and a run stopped before the start and resumed after it equals the straight one."""
    common = ["experiment=autoencoder_digits", *TINY_AE, "module.discriminator_start=3"]
    watch = DiscriminatorWatch()
    straight = run(
        make_config(*common, "train.iterations=5", run_dir=make_config.new_run_dir()), watch
    )
    initial = watch.digests[0]
    assert watch.digests[:3] == [initial] * 3  # iterations 1-3: the discriminator is untouched
    assert len(set(watch.digests[2:])) == 3  # 4 and 5: it steps
    module = straight["module"]
    assert module.iteration == 5 and module.discriminator_updates == 2
    first_dir = make_config.new_run_dir()
    run(make_config(*common, "train.iterations=2", run_dir=first_dir))
    resumed = run(
        make_config(*common, "train.iterations=5",
                    f"ckpt_path={first_dir / 'checkpoints' / 'last.ckpt'}", run_dir=first_dir)
    )  # fmt: skip
    assert resumed["module"].discriminator_updates == 2
    assert same_tensors(module.state_dict(), resumed["module"].state_dict())


def test_the_autoencoder_reports_its_terms_and_is_evaluated(make_config) -> None:
    cfg = make_config(
        "experiment=autoencoder_digits", *TINY_AE, "train.iterations=4",
        "module.discriminator_start=2", "callbacks=translation",
        "callbacks.translation.every_n_iterations=0", "callbacks.translation.num_pairs=64",
    )  # fmt: skip
    result = run(cfg)
    final = result["final_metrics"]
    for key in ("val/l1", "val/psnr", "val/ssim", "val/fid", "val/recall"):
        assert key in final and final[key] == final[key], key
    header = (Path(result["run_dir"]) / "metrics.csv").read_text().splitlines()[0]
    for column in ("train/g_rec/l1", "train/g_rec/perceptual", "train/g_kl",
                   "train/g_adaptive_weight", "train/d_loss"):  # fmt: skip
        assert column in header, column
    assert (Path(result["run_dir"]) / "samples" / "pairs_last.png").is_file()
    # The sampler reconstructs a folder of images with the checkpoint's autoencoder.
    from gan_template.sample import main as sample

    inputs = Path(result["run_dir"]) / "inputs"
    for i in range(3):
        _image(inputs / f"{i}.png", 40, 40)
    out = Path(result["run_dir"]) / "out" / "recon.pt"
    checkpoint = str(Path(result["run_dir"]) / "checkpoints" / "last.ckpt")
    written = sample([checkpoint, "--inputs", str(inputs), "--out", str(out)])
    assert written["samples"].shape == (3, 1, 16, 16)
    assert sorted(p.name for p in out.with_suffix("").iterdir()) == ["0.png", "1.png", "2.png"]
    with pytest.raises(SystemExit):
        sample([checkpoint, "--out", str(out)])  # an image-to-image checkpoint needs --inputs


def test_lpips_reads_its_backbone_from_a_local_file(tmp_path: Path) -> None:
    """No download: torchvision's squeezenet state dict (random weights here) from a file."""
    from torchvision.models import squeezenet1_1

    from gan_template.tasks.autoencoder import AutoencoderReconstruction

    path = tmp_path / "squeezenet.pth"
    torch.save(squeezenet1_1(weights=None).state_dict(), path)
    loss = AutoencoderReconstruction("lpips", 1.0, "squeeze", str(path))
    images = torch.rand(2, 1, 16, 16) * 2 - 1
    assert loss.perceptual_distance(images, images).abs().max() < 1e-6
    assert (loss.perceptual_distance(images, -images) > 0).all()
    torch.save({"classifier.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match=r"not torchvision.s squeezenet1_1 weights"):
        AutoencoderReconstruction("lpips", 1.0, "squeeze", str(path))
    with pytest.warns(UserWarning, match="1 - SSIM"):
        assert AutoencoderReconstruction("auto", lpips_weights=None).perceptual == "ssim"


# ---- a GAN in the autoencoder's latent space ------------------------------------------

#: A tiny autoencoder whose latents (4 x 8 x 8 at 16 px) a DCGAN can take.
TINY_AUTOENCODER = ["experiment=autoencoder_digits", *TINY_AE,
                    "model.generator.downsamples=1", "module.discriminator_start=1"]  # fmt: skip
TINY_LATENT_GAN = ["experiment=latent_gan_digits", "data.limit=128", "data.batch_size=16",
                   "model.generator.width=8", "model.discriminator.width=8",
                   "trainer.deterministic=true", "callbacks=default"]  # fmt: skip


@pytest.fixture(scope="module")
def autoencoder_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import FAST, compose_config

    run_dir = tmp_path_factory.mktemp("autoencoder")
    run(compose_config([*FAST, *TINY_AUTOENCODER, "train.iterations=2"], run_dir))
    return run_dir / "checkpoints" / "last.ckpt"


def test_the_latent_gan_trains_on_cached_latents_and_decodes_its_samples(
    make_config, autoencoder_checkpoint: Path, tmp_path: Path
) -> None:
    """Latents are encoded once and cached by the checkpoint's content; a retrained checkpoint
    is encoded afresh; samples are images (grids, FID, the sampler); 3 + resume + 3 iterations
    equal 6 bit for bit."""
    from gan_template.data.latents import LatentDataModule
    from gan_template.sample import main as sample

    cache = tmp_path / "cache"
    common = [*TINY_LATENT_GAN, f"data.autoencoder={autoencoder_checkpoint}",
              f"data.cache_dir={cache}"]  # fmt: skip
    evaluated = [*common, "callbacks=images", "callbacks.image_eval.every_n_iterations=0",
                 "callbacks.image_eval.num_samples=64", "callbacks.sample_grid.every_n_iterations=0",
                 "callbacks.sample_grid.interpolation_rows=0"]  # fmt: skip
    straight = run(make_config(*evaluated, "train.iterations=6", run_dir=make_config.new_run_dir()))
    cached = sorted(cache.glob("latents_*.pt"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    assert "image/fid" in straight["final_metrics"]
    grid = Path(straight["run_dir"]) / "samples" / "grid_last.png"
    assert Image.open(grid).size[0] > 16 * 10  # 16 px images, not 8 px latents

    first_dir = make_config.new_run_dir()
    run(make_config(*common, "train.iterations=3", run_dir=first_dir))
    resumed = run(
        make_config(*common, "train.iterations=6",
                    f"ckpt_path={first_dir / 'checkpoints' / 'last.ckpt'}", run_dir=first_dir)
    )  # fmt: skip
    assert same_tensors(straight["module"].state_dict(), resumed["module"].state_dict())
    assert cached[0].stat().st_mtime_ns == stamp  # read, never re-encoded

    out = tmp_path / "samples.pt"
    images = sample([str(first_dir / "checkpoints" / "last.ckpt"), "--n", "8", "--out", str(out)])
    assert images["samples"].shape == (8, 1, 16, 16)
    # The papers' protocol measures decoded samples against the real images too.
    from gan_template.evaluate import main as evaluate

    report = tmp_path / "evaluation.json"
    evaluate([str(first_dir / "checkpoints" / "last.ckpt"), "--samples", "64", "--out",
              str(report), "--cache-dir", str(cache)])  # fmt: skip
    assert json.loads(report.read_text())["metrics"]["fid"] > 0

    # A retrained autoencoder at the same path is a new cache entry.
    changed = tmp_path / "changed.ckpt"
    state = torch.load(autoencoder_checkpoint, map_location="cpu", weights_only=False)
    first = next(k for k in state["state_dict"] if k.startswith("generator."))
    state["state_dict"][first] = state["state_dict"][first] + 0.1
    torch.save(state, changed)
    LatentDataModule(str(changed), cache_dir=str(cache)).setup("fit")
    assert len(list(cache.glob("latents_*.pt"))) == 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.autoencoder=/nonexistent/last.ckpt"], r"data.autoencoder=/nonexistent.*no such"),
        (["data.channels=3"], r"data.channels=3.*latents .* have shape \(4, 8, 8\)"),
    ],
    ids=["missing checkpoint", "shape mismatch"],
)
def test_bad_latent_data_is_named(
    make_config, autoencoder_checkpoint: Path, overrides: list[str], message: str
) -> None:
    cfg = make_config(*TINY_LATENT_GAN, f"data.autoencoder={autoencoder_checkpoint}",
                      "train.iterations=1", *overrides)  # fmt: skip
    with pytest.raises(DataError, match=message):
        run(cfg)


# ---- bad input -------------------------------------------------------------------------


def _image(path: Path, width: int, height: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (120, 30, 200)).save(path)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"train/a.png": (32, 32), "val/a.png": (32, 32)}, "not two square images side by side"),
        ({"train/a.png": (33, 16), "val/a.png": (32, 16)}, "halves differ in size"),
        ({"cats/a.png": (32, 16)}, "no train/ folder"),
    ],
    ids=["unpaired folder", "odd width", "no train folder"],
)
def test_bad_paired_folders_are_named(tmp_path: Path, files: dict, message: str) -> None:
    for name, size in files.items():
        _image(tmp_path / name, *size)
    data = PairedImageDataModule(name="folder", root=str(tmp_path), channels=3, resolution=8)
    with pytest.raises(DataError, match=message):
        data.setup("fit")


def test_a_paired_folder_trains_with_its_direction(make_config, tmp_path: Path) -> None:
    for split, count in (("train", 6), ("val", 2)):
        for i in range(count):
            image = Image.new("RGB", (32, 16), (0, 0, 0))
            image.paste((255, 255, 255), (16, 0, 32, 16))  # A black, B white
            (tmp_path / "pairs" / split).mkdir(parents=True, exist_ok=True)
            image.save(tmp_path / "pairs" / split / f"{i}.png")
    for direction, (a, b) in (("AtoB", (-1.0, 1.0)), ("BtoA", (1.0, -1.0))):
        data = PairedImageDataModule(name="folder", root=str(tmp_path / "pairs"), channels=3,
                                     resolution=16, direction=direction)  # fmt: skip
        data.setup("fit")
        inputs, targets = data.validation_pairs()
        assert inputs.shape == (2, 3, 16, 16)
        assert torch.allclose(inputs, torch.full_like(inputs, a), atol=1e-2)
        assert torch.allclose(targets, torch.full_like(targets, b), atol=1e-2)
    cfg = make_config(
        "task=paired", "data=paired_folder", f"data.root={tmp_path / 'pairs'}",
        "data.resolution=16", "data.batch_size=2", "data.num_workers=0", "data.pin_memory=false",
        "model.generator.width=8", "model.discriminator.width=8", "train.iterations=2",
        "callbacks.translation.feature_extractor=inception",
        "callbacks.translation.every_n_iterations=0", "~callbacks.translation",
    )  # fmt: skip
    assert run(cfg)["module"].iteration == 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.generator.depth=5"], r"model.generator.*resolution=16 cannot pass depth=5"),
        (["model.discriminator.layers=3"], "model.discriminator.*layers to at most 2"),
        (["callbacks=images"], "generates from noise|draws latents|image-to-image"),
        (["data=digits"], "data.in_channels.*data=paired_digits or data=paired_folder"),
        (["train.n_critic=2"], "set train.n_critic=1"),
    ],
    ids=[
        "resolution the U-Net cannot take",
        "too deep a PatchGAN",
        "noise callbacks",
        "unpaired data",
        "n_critic",
    ],
)
def test_bad_task_configs_are_named(make_config, overrides: list[str], message: str) -> None:
    cfg = make_config("experiment=pix2pix_digits", *TINY, "train.iterations=1", *overrides)
    with pytest.raises(ConfigError, match=message):
        run(cfg)


# ---- under DDP (slow: 2 processes per task) ---------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "experiment", ["pix2pix_digits", "autoencoder_digits", "latent_gan_digits"]
)
def test_tasks_under_ddp(tmp_path: Path, experiment: str) -> None:
    """2-process DDP from each recipe: identical weights on both ranks, and a NaN injected on
    rank 1 at iteration 2 skips that iteration on both (the autoencoder's discriminator
    starts at iteration 1, so the skipped iteration has both updates)."""
    from conftest import FAST, compose_config

    if experiment == "latent_gan_digits":
        autoencoder = tmp_path / "autoencoder"
        run(compose_config([*FAST, *TINY_AUTOENCODER, "train.iterations=2"], autoencoder))
        overrides = [*TINY_LATENT_GAN, f"data.autoencoder={autoencoder}/checkpoints/last.ckpt",
                     f"data.cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    else:
        overrides = [f"experiment={experiment}", *TINY]
        if experiment == "autoencoder_digits":
            overrides = [f"experiment={experiment}", *TINY_AE, "module.discriminator_start=1"]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    argv = [
        sys.executable, "-m", "gan_template", *overrides,
        "trainer=ddp_cpu", "trainer.enable_progress_bar=false", "train.iterations=4",
        "skip.inject_nonfinite_at=[2]", "skip.inject_rank=1",
        "+callbacks.rank_report._target_=ddp_probe.RankReport",
        "extra_target_prefixes=[ddp_probe.]", f"hydra.run.dir={tmp_path / 'run'}",
    ]  # fmt: skip
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [json.loads((tmp_path / "run" / f"rank{r}.json").read_text()) for r in (0, 1)]
    for report in reports:
        assert report["world_size"] == 2 and report["iteration"] == 4
        assert report["skipped_batches"] == [2] and report["weights_finite"]
    assert reports[0]["weights_sha256"] == reports[1]["weights_sha256"]

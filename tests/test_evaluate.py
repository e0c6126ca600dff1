"""``python -m gan_template.evaluate``: the papers' protocol, offline, on a trained checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import linalg

from gan_template.evaluate import feature_metrics, main, reference_features


def frechet_distance_by_hand(a: np.ndarray, b: np.ndarray) -> float:
    """|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)), in float64 with scipy."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def test_fid_of_features_matches_the_formula_and_is_zero_for_identical_sets() -> None:
    rng = torch.Generator().manual_seed(0)
    a = torch.randn(600, 16, generator=rng, dtype=torch.float64).float()
    b = (torch.randn(700, 16, generator=rng) * 1.3 + 0.2).float()
    metrics = feature_metrics(a, b, kid_subset_size=100)
    expected = frechet_distance_by_hand(a.double().numpy(), b.double().numpy())
    assert metrics["fid"] == pytest.approx(expected, rel=1e-6)
    same = feature_metrics(a, a.clone(), kid_subset_size=100)
    assert abs(same["fid"]) < 1e-6 and same["precision"] == same["recall"] == 1.0


def test_fid_of_features_is_torchmetrics_fid_of_the_images() -> None:
    """Embedding once and passing features on changes nothing against torchmetrics' own use."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    from gan_template.metrics.protocol import embed

    torch.manual_seed(0)
    extractor = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 24))
    extractor.num_features = 24  # type: ignore[assignment]
    real, fake = torch.rand(300, 3, 8, 8) * 2 - 1, torch.rand(300, 3, 8, 8) * 1.6 - 0.9
    reference = FrechetInceptionDistance(feature=extractor, normalize=True)
    reference.update((real + 1) / 2, real=True)
    reference.update((fake + 1) / 2, real=False)
    ours = feature_metrics(embed(extractor, real, "cpu"), embed(extractor, fake, "cpu"), 100)
    assert ours["fid"] == pytest.approx(float(reference.compute()), rel=1e-6)


def test_a_checkpoint_is_evaluated_against_the_cached_training_set_and_the_protocol_recorded(
    digits_run: dict, tmp_path: Path
) -> None:
    ckpt = Path(digits_run["run_dir"]) / "checkpoints" / "last.ckpt"
    # The default cache: the session's run trained the digits' classifier into it already.
    args = [str(ckpt), "--n", "600", "--kid-subset-size", "200"]
    first = main([*args, "--out", str(tmp_path / "first.json")])
    second = main([*args, "--out", str(tmp_path / "second.json")])
    written = json.loads((tmp_path / "second.json").read_text())
    protocol = written["protocol"]
    assert protocol["n"] == 600 and protocol["generator"] == "ema"
    assert protocol["reference"]["data"] == "digits" and protocol["reference"]["size"] == 1797
    assert len(protocol["extractor"]["weights_sha256"]) == 64
    assert protocol["reference"]["cached"] is True  # the second run read the cached features
    assert protocol["reference"]["cache"] == first["protocol"]["reference"]["cache"]
    assert written["metrics"] == second["metrics"] == first["metrics"]  # same seed, same figures
    for name in ("fid", "kid_mean", "precision", "recall", "density", "coverage"):
        assert np.isfinite(written["metrics"][name]), name


def test_the_reference_cache_is_keyed_by_the_data_itself(tmp_path: Path) -> None:
    from PIL import Image

    from gan_template.data.images import ImageDataModule

    folder = tmp_path / "images" / "all"
    folder.mkdir(parents=True)
    pixels = np.random.default_rng(0).integers(0, 256, (40, 8, 8), dtype=np.uint8)
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(folder / f"{i:02d}.png")

    def data() -> ImageDataModule:  # a fresh module, as a new process would build it
        module = ImageDataModule("folder", root=str(tmp_path / "images"), resolution=8)
        module.setup("fit")
        return module

    extractor, cache = torch.nn.Flatten(), tmp_path / "cache"
    first, info = reference_features(data(), extractor, "flatten", cache, "cpu")
    again, info_again = reference_features(data(), extractor, "flatten", cache, "cpu")
    assert not info["cached"] and info_again["cached"] and torch.equal(first, again)
    assert info["size"] == 40 and first.shape == (40, 64)
    Image.fromarray(255 - pixels[7]).save(folder / "07.png")  # one image changes
    changed, info_changed = reference_features(data(), extractor, "flatten", cache, "cpu")
    assert not info_changed["cached"] and info_changed["cache"] != info["cache"]
    assert not torch.equal(changed, first)
    _, other_extractor = reference_features(data(), extractor, "another", cache, "cpu")
    assert not other_extractor["cached"]
    subset, info_subset = reference_features(data(), extractor, "flatten", cache, "cpu", n=10)
    assert len(subset) == 10 and not info_subset["cached"]


def test_the_evaluation_during_training_is_this_protocol_at_a_smaller_n(
    digits_run: dict, tmp_path: Path
) -> None:
    """The run's own final image/* figures are evaluate's, given its N, seed and reference."""
    ckpt = Path(digits_run["run_dir"]) / "checkpoints" / "last.ckpt"
    from gan_template.callbacks.image_eval import ImageQualityEvaluation

    settings = digits_run["cfg"].callbacks.image_eval
    seed = settings.get("seed", ImageQualityEvaluation().seed)
    record = main(
        [
            str(ckpt), "--n", str(settings.num_samples), "--seed", str(seed),
            "--reference-samples", str(settings.reference_samples),
            "--kid-subset-size", str(settings.kid_subset_size), "--out", str(tmp_path / "e.json"),
        ]
    )  # fmt: skip
    final = json.loads((Path(digits_run["run_dir"]) / "final_metrics.json").read_text())
    for name, value in record["metrics"].items():
        assert final[f"image/{name}"] == pytest.approx(value, rel=1e-6, abs=1e-9), name


def test_fd_dinov2_runs_offline_from_a_local_weights_file(digits_run: dict, tmp_path: Path) -> None:
    """DINOv2 (random weights of the small ViT, saved to a file) through the whole protocol."""
    import timm

    from gan_template.metrics.extractors import DINOv2Features
    from gan_template.metrics.protocol import file_sha256

    model = "vit_small_patch14_dinov2"
    net = timm.create_model(model, pretrained=False, num_classes=0, img_size=224)
    weights = tmp_path / "dinov2_random.pth"
    torch.save(net.state_dict(), weights)
    extractor = DINOv2Features(str(weights), model)
    for name, tensor in net.state_dict().items():  # every weight read from the file
        assert torch.equal(extractor.net.state_dict()[name], tensor), name
    assert extractor(torch.rand(2, 1, 16, 16)).shape == (2, 384)

    ckpt = Path(digits_run["run_dir"]) / "checkpoints" / "last.ckpt"
    record = main(
        [
            str(ckpt), "--feature-extractor", "dinov2", "--dinov2-weights", str(weights),
            "--dinov2-model", model, "--n", "24", "--reference-samples", "24",
            "--kid-subset-size", "12", "--cache-dir", str(tmp_path / "cache"),
            "--out", str(tmp_path / "fd_dinov2.json"),
        ]
    )  # fmt: skip
    extractor_id = record["protocol"]["extractor"]
    assert model in extractor_id["name"] and extractor_id["weights_sha256"] == file_sha256(weights)
    assert all(np.isfinite(value) for value in record["metrics"].values())


def test_a_toy_checkpoint_is_refused_with_a_message(
    make_config, capsys: pytest.CaptureFixture[str]
) -> None:
    from helpers import run

    result = run(
        make_config(
            "experiment=ring", "train.iterations=2", "callbacks.toy_eval.every_n_iterations=0"
        )
    )
    ckpt = Path(result["run_dir"]) / "checkpoints" / "last.ckpt"
    with pytest.raises(SystemExit) as exited:
        main([str(ckpt), "--n", "10"])
    assert exited.value.code == 2
    assert "is a run on toy data: its metrics are toy/*" in capsys.readouterr().err


@pytest.mark.slow
def test_two_processes_under_torchrun_give_the_single_process_figures(
    digits_run: dict, tmp_path: Path
) -> None:
    """The samples sharded over 2 ranks (gloo), gathered in batch order: the same metrics."""
    ckpt = Path(digits_run["run_dir"]) / "checkpoints" / "last.ckpt"
    # --samples, not --n: torchrun's own parser would take --n for its options' prefix.
    args = [str(ckpt), "--samples", "1100", "--kid-subset-size", "200", "--device", "cpu"]
    single = main([*args, "--out", str(tmp_path / "single.json")])
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "gan_template.evaluate", *args, "--out", str(tmp_path / "two.json"),
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-3000:]
    two = json.loads((tmp_path / "two.json").read_text())
    assert two["protocol"]["processes"] == 2 and single["protocol"]["processes"] == 1
    # 3 batches: ranks 0, 1, 0. The same features; KID's float32 kernel sums in another
    # order under torchrun (which sets OMP_NUM_THREADS=1), hence the tolerance.
    for name, value in single["metrics"].items():
        assert two["metrics"][name] == pytest.approx(value, rel=1e-5), name

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
    class Data:  # what reference_features reads of a data module
        name, resolution, channels = "folder", 8, 1

        def __init__(self, images: torch.Tensor) -> None:
            self.images, self.evaluation_dataset = images, images

        def real_samples(self, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
            return self.images[:n], torch.zeros(min(n, len(self.images)), dtype=torch.long)

    extractor = torch.nn.Flatten()
    images = torch.rand(40, 1, 8, 8) * 2 - 1
    first, info = reference_features(Data(images), extractor, "flatten", tmp_path, "cpu")
    again, info_again = reference_features(
        Data(images.clone()), extractor, "flatten", tmp_path, "cpu"
    )
    assert not info["cached"] and info_again["cached"] and torch.equal(first, again)
    changed = images.clone()
    changed[0] = -changed[0]  # one image differs: another reference set
    _, info_changed = reference_features(Data(changed), extractor, "flatten", tmp_path, "cpu")
    assert not info_changed["cached"] and info_changed["cache"] != info["cache"]
    _, other_extractor = reference_features(Data(images), extractor, "another", tmp_path, "cpu")
    assert not other_extractor["cached"]


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
    assert two["metrics"] == single["metrics"]  # 3 batches: ranks 0, 1, 0

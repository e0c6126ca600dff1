"""The default image run, and image metrics that move the right way.

The session's short run of the default recipe (``digits_run`` in conftest.py)
serves the files a run writes and the evaluation networks. The metrics are
checked against a generator that draws real held-out images: an untrained
generator and a collapsed one (one image for every z) must score worse on
every metric. Whether the recipe itself reaches that league in 1,500
iterations is a ``quality`` study (the nightly workflow).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST, compose_config
from helpers import run
from PIL import Image

from gan_template.callbacks.image_eval import ImageQualityEvaluation
from gan_template.data.images import ImageDataModule
from gan_template.metrics.images import class_coverage, fid_kid, to_unit_range
from gan_template.models.dcgan import DCGANGenerator


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The default recipe as shipped, 1,500 iterations (75-95 s here): the quality bar's run."""
    run_dir = tmp_path_factory.mktemp("default_run")
    cfg = compose_config([*FAST, "train.iterations=1500", "trainer.log_every_n_steps=100"], run_dir)
    assert cfg.data.name == "digits" and cfg.model.generator._target_.endswith("DCGANGenerator")
    return run(cfg) | {"cfg": cfg}


def test_default_run_writes_a_sample_grid_of_the_right_size(digits_run: dict) -> None:
    assert digits_run["cfg"].data.name == "digits"
    assert digits_run["cfg"].model.generator._target_.endswith("DCGANGenerator")
    grid = Path(digits_run["run_dir"]) / "samples" / "grid_last.png"
    # 10 x 10 images of 16 px with make_grid's 2 px padding around each.
    assert Image.open(grid).size == (10 * 18 + 2, 10 * 18 + 2)
    assert (Path(digits_run["run_dir"]) / "samples" / "grid_iter0000060.png").is_file()
    assert (Path(digits_run["run_dir"]) / "final_metrics.json").is_file()
    # The end of the run also walks the latent space: 8 rows of 10 steps.
    walks = Path(digits_run["run_dir"]) / "samples" / "interpolation.png"
    assert Image.open(walks).size == (10 * 18 + 2, 8 * 18 + 2)


def test_sampling_cli_writes_latent_walks_from_a_checkpoint(
    digits_run: dict, tmp_path: Path
) -> None:
    from gan_template.sample import main

    ckpt = Path(digits_run["run_dir"]) / "checkpoints" / "last.ckpt"
    out = tmp_path / "s.pt"
    written = main(
        [str(ckpt), "--n", "16", "--out", str(out), "--interpolation", "3", "--steps", "5"]
    )
    walks = tmp_path / "s_interpolation.png"
    assert str(walks) in written["written"]
    assert Image.open(walks).size == (5 * 18 + 2, 3 * 18 + 2)
    pixels = torch.from_numpy(np.asarray(Image.open(walks).convert("L"), dtype=np.float32))
    assert pixels.std() > 10  # images, not a blank page


class _Collapsed(torch.nn.Module):
    """A generator that returns one image whatever z is."""

    def __init__(self, image: torch.Tensor) -> None:
        super().__init__()
        self.image = image
        self.latent_dim = 64

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.image.expand(len(z), -1, -1, -1)


class _RealImages(torch.nn.Module):
    """A perfect generator: real images of the held-out draw, one per z."""

    def __init__(self, images: torch.Tensor) -> None:
        super().__init__()
        self.images = images

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.images[: len(z)]


def scores_against_untrained_and_collapsed(run: dict, good: torch.nn.Module) -> dict[str, dict]:
    """FID, KID, P/R/D/C and class coverage of ``good``, an untrained and a collapsed generator."""
    trainer = run["module"].trainer
    evaluation = next(c for c in trainer.callbacks if isinstance(c, ImageQualityEvaluation))
    datamodule: ImageDataModule = trainer.datamodule
    real, _ = datamodule.real_samples(1000, seed=123)
    extractor, classifier = evaluation._extractor, evaluation._classifier
    class_probs = evaluation._data_class_probs
    torch.manual_seed(0)
    untrained = DCGANGenerator(latent_dim=64, channels=1, resolution=16, width=64).eval()
    z = torch.randn(1000, 64)
    collapsed = _Collapsed(good(z[:1]))
    scores = {}
    for name, generator in {"good": good, "untrained": untrained, "collapsed": collapsed}.items():
        fake = generator(z)
        metrics = fid_kid(extractor, real, fake)
        metrics |= class_coverage(classifier(to_unit_range(fake)), class_probs).as_dict()
        scores[name] = metrics
    return scores


def assert_good_beats_untrained_and_collapsed(scores: dict[str, dict]) -> None:
    for worse in ("untrained", "collapsed"):
        assert scores["good"]["fid"] < scores[worse]["fid"], scores
        assert scores["good"]["kid_mean"] < scores[worse]["kid_mean"], scores
        assert scores["good"]["classes_covered"] > scores[worse]["classes_covered"], scores
        assert scores["good"]["class_kl"] < scores[worse]["class_kl"], scores
    # One image repeated: it may look real (precision), but it covers nothing of the data.
    assert scores["collapsed"]["recall"] < 0.05 and scores["collapsed"]["coverage"] < 0.05, scores
    assert scores["good"]["recall"] > 0.3 and scores["good"]["coverage"] > 0.3, scores
    assert scores["good"]["classes_covered"] >= 8, scores


@torch.no_grad()
def test_real_images_beat_untrained_and_collapsed_generators_on_every_metric(
    digits_run: dict,
) -> None:
    datamodule: ImageDataModule = digits_run["module"].trainer.datamodule
    held_out, _ = datamodule.real_samples(1000, seed=7)  # another draw than the reference's
    scores = scores_against_untrained_and_collapsed(digits_run, _RealImages(held_out))
    assert_good_beats_untrained_and_collapsed(scores)


@pytest.mark.quality
@torch.no_grad()
def test_the_default_recipe_trained_1500_iterations_beats_untrained_and_collapsed(
    default_run: dict,
) -> None:
    trained = default_run["module"].sampling_generator.eval()
    assert_good_beats_untrained_and_collapsed(
        scores_against_untrained_and_collapsed(default_run, trained)
    )


def test_cached_classifiers_are_keyed_by_the_data_not_only_its_name() -> None:
    from gan_template.metrics.extractors import data_fingerprint

    images, labels = torch.rand(300, 1, 8, 8), torch.randint(0, 10, (300,))
    same = data_fingerprint(images.clone(), labels.clone())
    assert data_fingerprint(images, labels) == same
    assert data_fingerprint(images.flip(0), labels) != same  # another folder of the same size
    assert data_fingerprint(images, (labels + 1) % 10) != same


@pytest.fixture(scope="module")
def inception_weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Inception-v3 weights in torch-fidelity's format, random (no download): a stand-in file.

    The network is built once with its loader told to load nothing; its fresh
    weights are saved, and the run under test loads that file as it would the real one.
    """
    fidelity = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    path = tmp_path_factory.mktemp("inception") / "pt_inception-random.pth"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fidelity, "load_state_dict_from_url", lambda *args, **kwargs: {})
        patch.setattr(
            fidelity.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None
        )
        network = fidelity.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    torch.save(network.state_dict(), path)
    return path


def test_unlabelled_images_get_fid_kid_and_prdc_offline_from_a_local_inception_file(
    tmp_path: Path, inception_weights_file: Path
) -> None:
    folder = tmp_path / "images" / "all"  # one folder: no labels
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(16):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    cfg = compose_config(
        [*FAST, "data=folder", f"data.root={folder.parent}", "data.resolution=8", "data.batch_size=8",
         "train.iterations=2", "callbacks.image_eval.feature_extractor=inception",
         f"callbacks.image_eval.inception_weights={inception_weights_file}",
         "callbacks.image_eval.num_samples=8", "callbacks.image_eval.kid_subset_size=4"],
        tmp_path / "run",
    )  # fmt: skip
    result = run(cfg)
    final = result["final_metrics"]
    for name in ("fid", "kid_mean", "precision", "recall", "density", "coverage"):
        assert np.isfinite(final[f"image/{name}"]), (name, final)
    assert "image/class_kl" not in final  # no labels: no class coverage
    evaluation = next(
        c for c in result["module"].trainer.callbacks if isinstance(c, ImageQualityEvaluation)
    )
    loaded = evaluation._extractor.inception.state_dict()
    saved = torch.load(inception_weights_file, weights_only=True)
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)  # the local file, not a download


def test_a_missing_inception_weights_file_is_refused_at_start_up(tmp_path: Path) -> None:
    from gan_template.harness.errors import ConfigError

    cfg = compose_config(
        [*FAST, "callbacks.image_eval.feature_extractor=inception",
         f"callbacks.image_eval.inception_weights={tmp_path / 'nowhere.pth'}"],
        tmp_path / "run",
    )  # fmt: skip
    with pytest.raises(
        ConfigError, match=r"callbacks.image_eval.inception_weights='.*nowhere.pth' is not a file"
    ):
        run(cfg)

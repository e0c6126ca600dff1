"""The default image run, and image metrics that move the right way.

One short run of the default recipe (module-scoped: it takes about half a
minute) serves as the "trained generator"; an untrained generator and a
collapsed one (one image for every z) must score worse on every metric.
"""

from __future__ import annotations

from pathlib import Path

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
    run_dir = tmp_path_factory.mktemp("default_run")
    cfg = compose_config([*FAST, "train.iterations=1500", "trainer.log_every_n_steps=100"], run_dir)
    assert cfg.data.name == "digits" and cfg.model.generator._target_.endswith("DCGANGenerator")
    return run(cfg) | {"cfg": cfg}


def test_default_run_writes_a_sample_grid_of_the_right_size(default_run: dict) -> None:
    grid = Path(default_run["run_dir"]) / "samples" / "grid_last.png"
    # 10 x 10 images of 16 px with make_grid's 2 px padding around each.
    assert Image.open(grid).size == (10 * 18 + 2, 10 * 18 + 2)
    assert (Path(default_run["run_dir"]) / "samples" / "grid_iter0001500.png").is_file()
    assert (Path(default_run["run_dir"]) / "final_metrics.json").is_file()
    # The end of the run also walks the latent space: 8 rows of 10 steps.
    walks = Path(default_run["run_dir"]) / "samples" / "interpolation.png"
    assert Image.open(walks).size == (10 * 18 + 2, 8 * 18 + 2)


def test_sampling_cli_writes_latent_walks_from_a_checkpoint(
    default_run: dict, tmp_path: Path
) -> None:
    from gan_template.sample import main

    ckpt = Path(default_run["run_dir"]) / "checkpoints" / "last.ckpt"
    out = tmp_path / "s.pt"
    written = main(
        [str(ckpt), "--n", "16", "--out", str(out), "--interpolation", "3", "--steps", "5"]
    )
    walks = tmp_path / "s_interpolation.png"
    assert str(walks) in written["written"]
    assert Image.open(walks).size == (5 * 18 + 2, 3 * 18 + 2)
    pixels = torch.tensor(list(Image.open(walks).convert("L").getdata()), dtype=torch.float32)
    assert pixels.std() > 10  # images, not a blank page


class _Collapsed(torch.nn.Module):
    """A generator that returns one image whatever z is."""

    def __init__(self, image: torch.Tensor) -> None:
        super().__init__()
        self.image = image
        self.latent_dim = 64

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.image.expand(len(z), -1, -1, -1)


@torch.no_grad()
def test_trained_generator_beats_untrained_and_collapsed_on_every_metric(default_run: dict) -> None:
    trainer = default_run["module"].trainer
    evaluation = next(c for c in trainer.callbacks if isinstance(c, ImageQualityEvaluation))
    datamodule: ImageDataModule = trainer.datamodule
    real, _ = datamodule.real_samples(1000, seed=123)
    extractor, classifier = evaluation._extractor, evaluation._classifier
    class_probs = evaluation._data_class_probs

    trained = default_run["module"].sampling_generator.eval()
    torch.manual_seed(0)
    untrained = DCGANGenerator(latent_dim=64, channels=1, resolution=16, width=64).eval()
    z = torch.randn(1000, 64)
    collapsed = _Collapsed(trained(z[:1]))

    scores = {}
    for name, generator in {
        "trained": trained,
        "untrained": untrained,
        "collapsed": collapsed,
    }.items():
        fake = generator(z)
        metrics = fid_kid(extractor, real, fake)
        metrics |= class_coverage(classifier(to_unit_range(fake)), class_probs).as_dict()
        scores[name] = metrics
    for worse in ("untrained", "collapsed"):
        assert scores["trained"]["fid"] < scores[worse]["fid"], scores
        assert scores["trained"]["kid_mean"] < scores[worse]["kid_mean"], scores
        assert scores["trained"]["classes_covered"] > scores[worse]["classes_covered"], scores
        assert scores["trained"]["class_kl"] < scores[worse]["class_kl"], scores
    # One image repeated: it may look real (precision), but it covers nothing of the data.
    assert scores["collapsed"]["recall"] < 0.05 and scores["collapsed"]["coverage"] < 0.05, scores
    assert scores["trained"]["recall"] > 0.3 and scores["trained"]["coverage"] > 0.3, scores
    assert scores["trained"]["classes_covered"] >= 8, scores


def test_cached_classifiers_are_keyed_by_the_data_not_only_its_name() -> None:
    from gan_template.callbacks.image_eval import data_fingerprint

    images, labels = torch.rand(300, 1, 8, 8), torch.randint(0, 10, (300,))
    same = data_fingerprint(images.clone(), labels.clone())
    assert data_fingerprint(images, labels) == same
    assert data_fingerprint(images.flip(0), labels) != same  # another folder of the same size
    assert data_fingerprint(images, (labels + 1) % 10) != same

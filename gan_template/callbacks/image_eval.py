"""FID, KID and class coverage of generated images, during training and at the end."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.seed import isolate_rng
from torch import Tensor, nn

from gan_template import models
from gan_template.callbacks.periodic import FINAL_METRICS, EveryNIterations, require_noise_input
from gan_template.data.images import ImageDataModule
from gan_template.harness.errors import ConfigError
from gan_template.harness.loggers import log_at_iteration
from gan_template.metrics.classifier import (
    FeatureExtractor,
    SmallClassifier,
    load_or_train_classifier,
)
from gan_template.metrics.images import PRDC_NEAREST_K, class_coverage, fid_kid, to_unit_range
from gan_template.module import GANModule, as_gan_module


def default_cache_dir() -> Path:
    return Path(os.environ.get("GAN_TEMPLATE_CACHE", Path.home() / ".cache" / "gan_template"))


class ImageQualityEvaluation(EveryNIterations):
    """Every ``every_n_iterations`` (and at the end): FID, KID and class coverage of the EMA generator.

    Args:
        every_n_iterations: evaluation period in iterations; 0 evaluates at the end only.
        num_samples: generated (and real) images per evaluation.
        feature_extractor: ``classifier`` (offline: a small CNN trained on the
            dataset's labelled images, cached under ``cache_dir``) or ``inception``
            (torchmetrics' Inception-v3; needs ``pip install torch-fidelity``; FIDs
            comparable with papers; the only choice for unlabelled images).
        inception_weights: a local file of the Inception-v3 weights (torch-fidelity's
            ``pt_inception-2015-12-05-6726825d.pth``): no download, for compute
            nodes without internet. None downloads them once.
        kid_subset_size: KID subset size (capped at ``num_samples``).
        confidence: classifier confidence for class coverage.
        cache_dir: where the offline classifier is cached (default
            ``$GAN_TEMPLATE_CACHE`` or ``~/.cache/gan_template``).
        seed: seed of the evaluation noise and of the real subset.
    """

    def __init__(
        self,
        every_n_iterations: int = 1000,
        num_samples: int = 1000,
        feature_extractor: str = "classifier",
        inception_weights: str | None = None,
        kid_subset_size: int = 500,
        confidence: float = 0.9,
        cache_dir: str | None = None,
        seed: int = 2024,
    ) -> None:
        if feature_extractor not in ("classifier", "inception"):
            raise ValueError(
                f"feature_extractor={feature_extractor!r} must be 'classifier' (offline) or 'inception'"
            )
        # Checked here, not at the first evaluation: a run must not train for an hour first.
        if feature_extractor == "inception" and importlib.util.find_spec("torch_fidelity") is None:
            raise ValueError(
                "feature_extractor='inception' needs the torch-fidelity package: "
                'pip install -e ".[inception]"'
            )
        weights = Path(inception_weights).expanduser() if inception_weights is not None else None
        if weights is not None and not weights.is_file():
            raise ValueError(
                f"inception_weights={inception_weights!r} is not a file; give the path of the "
                "Inception-v3 weights (pt_inception-2015-12-05-6726825d.pth), or null to download them"
            )
        neighbours = max(PRDC_NEAREST_K)
        if num_samples <= neighbours:
            raise ValueError(
                f"num_samples={num_samples}: must be > {neighbours} (precision, recall, density "
                f"and coverage use each sample's {neighbours}-th nearest neighbour); 1000 or more "
                "gives stable figures"
            )
        if kid_subset_size < 2:
            raise ValueError(f"kid_subset_size={kid_subset_size}: must be >= 2")
        if not 0 < confidence <= 1:
            raise ValueError(f"confidence={confidence}: must be in (0, 1]")
        super().__init__(every_n_iterations)
        self.num_samples = num_samples
        self.feature_extractor = feature_extractor
        self.inception_weights = str(weights) if weights is not None else None
        self.kid_subset_size = kid_subset_size
        self.confidence = confidence
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.seed = seed
        self.result: dict[str, float] | None = None
        self._classifier: SmallClassifier | None = None
        self._extractor: nn.Module | None = None
        self._real: tuple[Tensor, Tensor] | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require_noise_input(pl_module, "the image evaluation (callbacks.image_eval)")
        datamodule = trainer.datamodule  # type: ignore[attr-defined]  # set by Lightning
        classes = getattr(datamodule, "num_classes", 0)
        if self.feature_extractor == "classifier" and classes < 2:
            # Refused now, not at the first evaluation: a classifier of one class (or none)
            # gives features in which every image looks alike (FID near 0, recall 0).
            raise ConfigError(
                f"callbacks.image_eval.feature_extractor=classifier needs labelled images of at "
                f"least 2 classes, and the data has {classes} (data=folder: one subfolder per "
                "class). Sort the images into class folders, or set "
                "callbacks.image_eval.feature_extractor=inception (pip install torch-fidelity; "
                "callbacks.image_eval.inception_weights=<file> works offline), "
                "or callbacks=default (no image metrics)"
            )
        if not classes:
            rank_zero_info(
                "ImageQualityEvaluation: the data has no class labels; class coverage is off"
            )

    def _prepare(self, trainer: L.Trainer) -> None:
        if self._real is not None:
            return
        datamodule = trainer.datamodule  # type: ignore[attr-defined]  # set by Lightning
        self._real = datamodule.real_samples(self.num_samples, seed=self.seed)
        if datamodule.num_classes >= 2:  # one class: nothing to classify
            self._classifier, self._data_class_probs = offline_classifier(
                datamodule, self.cache_dir
            )
        if self.feature_extractor == "inception":
            self._extractor = InceptionFeatures(self.inception_weights)
        elif self._classifier is not None:
            self._extractor = FeatureExtractor(self._classifier)
        else:
            raise ValueError(
                "feature_extractor=classifier needs labelled data; use a labelled dataset or "
                "feature_extractor=inception (pip install torch-fidelity; needs internet once)"
            )

    def run(self, trainer: L.Trainer, pl_module: GANModule) -> None:
        self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        pl_module = as_gan_module(pl_module)
        if self.result is not None and trainer.is_global_zero:
            # The values go into the run's one result file, final_metrics.json (train.py).
            path = Path(trainer.default_root_dir) / FINAL_METRICS
            summary = ", ".join(f"{k} {v:.4g}" for k, v in self.result.items())
            rank_zero_info(f"Image metrics at iteration {pl_module.iteration}: {summary} ({path})")

    def generate(self, pl_module: GANModule, labels: Tensor) -> Tensor:
        """One sample per real label (the real class balance when conditional)."""
        rng = torch.Generator().manual_seed(self.seed)
        noise = torch.randn(len(labels), pl_module.latent_dim, generator=rng)
        conditioning = labels if pl_module.conditional else None
        return models.generate(pl_module.sampling_generator, noise, conditioning, chunk_size=250)

    @torch.no_grad()
    @isolate_rng()  # metrics draw (KID subsets, noise) without moving training's streams
    def evaluate(self, trainer: L.Trainer, pl_module: GANModule) -> dict[str, float]:
        self._prepare(trainer)
        assert self._real is not None and self._extractor is not None
        real_images, real_labels = self._real
        fake = self.generate(pl_module, real_labels)
        result = fid_kid(self._extractor, real_images, fake, self.kid_subset_size)
        if self._classifier is not None:
            coverage = class_coverage(
                self._classifier(to_unit_range(fake)), self._data_class_probs, self.confidence
            )
            result |= coverage.as_dict()
        self.result = result
        self.last_metrics = {f"image/{k}": float(v) for k, v in result.items()}
        log_at_iteration(trainer.loggers, self.last_metrics, pl_module.iteration)
        return result


def offline_classifier(
    datamodule: ImageDataModule, cache_dir: Path
) -> tuple[SmallClassifier, Tensor]:
    """The small classifier of a labelled image set (trained once, cached), and its class frequencies.

    It trains on the full labelled set (its own held-out split inside). Cached by
    the data itself, not only its name: two image folders of the same size must
    not share a classifier.
    """
    assert datamodule.evaluation_dataset is not None, "setup() must run first"
    images, labels = datamodule.real_samples(len(datamodule.evaluation_dataset), seed=0)  # type: ignore[arg-type]
    fingerprint = data_fingerprint(images, labels)
    name = f"{datamodule.name}_{datamodule.channels}x{datamodule.resolution}_{fingerprint}_v1.pt"
    classifier, accuracy = load_or_train_classifier(
        cache_dir / name, images, labels, datamodule.num_classes
    )
    rank_zero_info(f"Offline classifier for metrics: held-out accuracy {accuracy:.3f}")
    counts = torch.bincount(labels, minlength=datamodule.num_classes).double()
    return classifier, counts / counts.sum()


def data_fingerprint(images: Tensor, labels: Tensor) -> str:
    """A short hash of a labelled image set (its size, labels and a spread of its images)."""
    step = max(1, len(images) // 256)
    digest = hashlib.sha1(str(tuple(images.shape)).encode())
    digest.update(labels.numpy().tobytes())
    digest.update(images[::step].contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


class InceptionFeatures(nn.Module):
    """torchmetrics' Inception-v3 pool features (2048-d) for images in [0, 1], grey made RGB."""

    num_features = 2048

    def __init__(self, weights: str | None = None) -> None:
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.inception = NoTrainInceptionV3(
            name="inception-v3-compat",
            features_list=["2048"],
            feature_extractor_weights_path=weights,  # None: download once
        )

    def forward(self, images01: Tensor) -> Tensor:
        images = (images01.expand(-1, 3, -1, -1) * 255).to(torch.uint8)
        return self.inception(images)

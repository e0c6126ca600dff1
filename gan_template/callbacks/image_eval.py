"""FID, KID, precision/recall/density/coverage and class coverage during training and at the end.

The evaluation of ``gan_template.evaluate`` with a smaller N
(``metrics/protocol.py``): the same extractors, the same cached reference
features, the same seeded batches of samples, sharded over the ranks.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.seed import isolate_rng
from torch import Tensor, nn

from gan_template.callbacks.periodic import FINAL_METRICS, EveryNIterations, require_noise_input
from gan_template.harness.errors import ConfigError
from gan_template.harness.loggers import log_at_iteration
from gan_template.metrics.classifier import SmallClassifier
from gan_template.metrics.extractors import (
    DINOV2_MODEL,
    EXTRACTORS,
    build_extractor,
    default_cache_dir,
    offline_classifier,
)
from gan_template.metrics.images import PRDC_NEAREST_K, class_coverage
from gan_template.metrics.protocol import (
    feature_metrics,
    gathered,
    generated_features,
    reference_features,
)
from gan_template.module import GANModule, as_gan_module


class ImageQualityEvaluation(EveryNIterations):
    """Every ``every_n_iterations`` (and at the end): FID, KID and class coverage of the EMA generator.

    Args:
        every_n_iterations: evaluation period in iterations; 0 evaluates at the end only.
        num_samples: generated images per evaluation.
        feature_extractor: ``classifier`` (offline: a small CNN trained on the
            dataset's labelled images, cached under ``cache_dir``) or ``inception``
            (torchmetrics' Inception-v3; needs ``pip install torch-fidelity``; FIDs
            comparable with papers; the only choice for unlabelled images).
        inception_weights: a local file of the Inception-v3 weights (torch-fidelity's
            ``pt_inception-2015-12-05-6726825d.pth``): no download, for compute
            nodes without internet. None downloads them once.
        dinov2_weights, dinov2_model: for ``feature_extractor=dinov2`` (FD-DINOv2;
            ``pip install -e ".[dinov2]"``): a local weights file (None: timm
            downloads them once) and timm's name of the network.
        kid_subset_size: KID subset size (capped at ``num_samples``).
        confidence: classifier confidence for class coverage.
        cache_dir: where the offline classifier is cached (default
            ``$GAN_TEMPLATE_CACHE`` or ``~/.cache/gan_template``).
        seed: seed of the evaluation noise and of the real subset.
        reference_samples: real images the samples are compared with (a subset
            fixed by ``seed``); None: every image of the training set, as
            ``gan_template.evaluate`` does (their features are cached on disk;
            precision/recall cost grows with their square).
    """

    def __init__(
        self,
        every_n_iterations: int = 1000,
        num_samples: int = 1000,
        feature_extractor: str = "classifier",
        inception_weights: str | None = None,
        dinov2_weights: str | None = None,
        dinov2_model: str = DINOV2_MODEL,
        kid_subset_size: int = 500,
        confidence: float = 0.9,
        cache_dir: str | None = None,
        seed: int = 2024,
        reference_samples: int | None = 1000,
    ) -> None:
        if feature_extractor not in EXTRACTORS:
            raise ValueError(
                f"feature_extractor={feature_extractor!r} must be 'classifier' (offline), "
                "'inception' or 'dinov2'"
            )
        if feature_extractor == "dinov2" and importlib.util.find_spec("timm") is None:
            raise ValueError(
                "feature_extractor='dinov2' needs the timm package: pip install -e \".[dinov2]\""
            )
        if dinov2_weights is not None and not Path(dinov2_weights).expanduser().is_file():
            raise ValueError(
                f"dinov2_weights={dinov2_weights!r} is not a file; give the path of DINOv2's "
                "weights (timm's model.safetensors or Meta's dinov2_vitl14_pretrain.pth), or null "
                "to download them"
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
        if reference_samples is not None and reference_samples <= neighbours:
            raise ValueError(
                f"reference_samples={reference_samples}: must be > {neighbours}, or null (every image)"
            )
        if kid_subset_size < 2:
            raise ValueError(f"kid_subset_size={kid_subset_size}: must be >= 2")
        if not 0 < confidence <= 1:
            raise ValueError(f"confidence={confidence}: must be in (0, 1]")
        super().__init__(every_n_iterations)
        self.num_samples = num_samples
        self.feature_extractor = feature_extractor
        self.inception_weights = str(weights) if weights is not None else None
        self.dinov2_weights = str(Path(dinov2_weights).expanduser()) if dinov2_weights else None
        self.dinov2_model = dinov2_model
        self.kid_subset_size = kid_subset_size
        self.confidence = confidence
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.seed = seed
        self.reference_samples = reference_samples
        self.result: dict[str, float] | None = None
        self._classifier: SmallClassifier | None = None
        self._extractor: nn.Module | None = None
        self._real: Tensor | None = None  # the reference features

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

    def _prepare(self, trainer: L.Trainer, device: torch.device) -> None:
        """The extractors and the reference features: once per run (and cached on disk)."""
        if self._real is not None:
            return
        datamodule = trainer.datamodule  # type: ignore[attr-defined]  # set by Lightning
        if datamodule.num_classes >= 2:  # one class: nothing to classify
            self._classifier, self._data_class_probs = offline_classifier(
                datamodule, self.cache_dir
            )
            self._classifier.to(device)
        self._extractor, identity = build_extractor(
            self.feature_extractor,
            datamodule,
            self.cache_dir,
            self.inception_weights,
            self.dinov2_weights,
            self.dinov2_model,
            classifier=self._classifier,  # loaded above: not a second time
        )
        self._extractor.to(device)
        # Rank 0 embeds the reference set into the cache first; the others then read it.
        if trainer.global_rank != 0:
            trainer.strategy.barrier("image_eval reference")
        self._real, _ = reference_features(
            datamodule, self._extractor, json.dumps(identity, sort_keys=True), self.cache_dir,
            device, n=self.reference_samples, seed=self.seed,
        )  # fmt: skip
        if trainer.global_rank == 0:
            trainer.strategy.barrier("image_eval reference")

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

    @torch.no_grad()
    @isolate_rng()  # metrics draw (KID subsets) without moving training's streams
    def evaluate(self, trainer: L.Trainer, pl_module: GANModule) -> dict[str, float]:
        self._prepare(trainer, pl_module.device)
        assert self._real is not None and self._extractor is not None
        extractors = {"features": self._extractor}
        if self._classifier is not None:
            extractors["logits"] = self._classifier
        # Batch b of the samples from seed (self.seed, b), made by rank b mod world size.
        fake = gathered(
            generated_features(
                pl_module.sampling_generator, extractors, self.num_samples, self.seed,
                pl_module.device, trainer.global_rank, trainer.world_size,
            ),
            trainer.world_size,
        )  # fmt: skip
        result = feature_metrics(self._real, fake["features"], self.kid_subset_size)
        if self._classifier is not None:
            coverage = class_coverage(fake["logits"], self._data_class_probs, self.confidence)
            result |= coverage.as_dict()
        self.result = result
        self.last_metrics = {f"image/{k}": float(v) for k, v in result.items()}
        log_at_iteration(trainer.loggers, self.last_metrics, pl_module.iteration)
        return result

"""The image-to-image tasks' evaluation: held-out pairs scored and pictured, every N iterations.

On the data's held-out split (``validation_pairs``): L1, PSNR and SSIM of each
output against its target (torchmetrics; images in [0, 1]), FID, KID and
precision/recall/density/coverage of the outputs against the targets (the
offline classifier's features, or Inception), logged as ``val/*``; and a
picture, ``samples/pairs_iterNNNNNNN.png`` (+ ``pairs_last.png``), each triple
input | output | target.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import lightning as L
import torch
from lightning.pytorch.utilities.seed import isolate_rng
from torch import Tensor, nn
from torchvision.utils import save_image

from gan_template.callbacks.periodic import EveryNIterations
from gan_template.harness.errors import ConfigError
from gan_template.harness.loggers import log_at_iteration, log_image
from gan_template.metrics.extractors import build_extractor, default_cache_dir
from gan_template.metrics.images import fid_kid, to_unit_range
from gan_template.module import GANModule
from gan_template.tasks.image_to_image import ImageToImage


def translation_metrics(outputs: Tensor, targets: Tensor) -> dict[str, float]:
    """L1 (in [-1, 1] units, as the loss), PSNR (dB) and SSIM of outputs against targets."""
    from torchmetrics.functional.image import (
        peak_signal_noise_ratio,
        structural_similarity_index_measure,
    )

    out01, target01 = to_unit_range(outputs), to_unit_range(targets)
    kernel = 11 if min(outputs.shape[-2:]) >= 32 else 7  # SSIM's window inside a small image
    ssim = structural_similarity_index_measure(out01, target01, data_range=1.0, kernel_size=kernel)
    assert isinstance(ssim, Tensor)  # the mean over images (no contrast-structure map asked for)
    return {
        "l1": float((outputs - targets).abs().mean()),
        "psnr": float(peak_signal_noise_ratio(out01, target01, data_range=1.0)),
        "ssim": float(ssim),
    }


class TranslationEvaluation(EveryNIterations):
    """Scores and pictures of an image-to-image module on the held-out pairs.

    Args:
        every_n_iterations: period in iterations; 0: at the end only.
        num_pairs: held-out pairs scored (None: all of them).
        feature_extractor: ``classifier`` (offline; the targets need class labels,
            as the paired digits have) or ``inception`` (any images; torch-fidelity).
        inception_weights: a local Inception-v3 weights file (no download).
        kid_subset_size: KID's subset size (capped at the number of pairs).
        picture_pairs: triples in the picture (input | output | target), four per row.
        cache_dir: where the offline classifier is cached.
    """

    def __init__(
        self,
        every_n_iterations: int = 1000,
        num_pairs: int | None = None,
        feature_extractor: str = "classifier",
        inception_weights: str | None = None,
        kid_subset_size: int = 100,
        picture_pairs: int = 32,
        cache_dir: str | None = None,
    ) -> None:
        if feature_extractor not in ("classifier", "inception"):
            raise ValueError(
                f"feature_extractor={feature_extractor!r}: 'classifier' (offline) or 'inception'"
            )
        if num_pairs is not None and num_pairs < 8:
            raise ValueError(f"num_pairs={num_pairs}: at least 8 (or null: every held-out pair)")
        if picture_pairs < 1:
            raise ValueError(f"picture_pairs={picture_pairs}: must be >= 1")
        super().__init__(every_n_iterations)
        self.num_pairs = num_pairs
        self.feature_extractor = feature_extractor
        self.inception_weights = inception_weights
        self.kid_subset_size = kid_subset_size
        self.picture_pairs = picture_pairs
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self._extractor: nn.Module | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not callable(getattr(pl_module, "translate", None)):
            raise ConfigError(
                f"callbacks: the translation evaluation scores an image-to-image module, and "
                f"{type(pl_module).__name__} generates from noise; use callbacks=images"
            )
        datamodule = trainer.datamodule  # type: ignore[attr-defined]
        if not callable(getattr(datamodule, "validation_pairs", None)):
            raise ConfigError(
                f"callbacks: the translation evaluation needs held-out pairs, and the data module "
                f"{type(datamodule).__name__} has no validation_pairs(); use paired data"
            )
        if self.feature_extractor == "classifier" and getattr(datamodule, "num_classes", 0) < 2:
            raise ConfigError(
                "callbacks.translation.feature_extractor=classifier needs labelled targets (the "
                "paired digits); for a paired folder set callbacks.translation.feature_extractor="
                "inception (callbacks.translation.inception_weights=<file> works offline)"
            )

    def _features(self, trainer: L.Trainer, device: torch.device) -> nn.Module:
        if self._extractor is None:
            datamodule = trainer.datamodule  # type: ignore[attr-defined]
            self._extractor, _ = build_extractor(
                self.feature_extractor, datamodule, self.cache_dir, self.inception_weights
            )
            self._extractor.to(device)
        return self._extractor

    @torch.no_grad()
    @isolate_rng()  # KID's subsets draw without moving training's random streams
    def run(self, trainer: L.Trainer, pl_module: GANModule) -> None:
        inputs, targets = trainer.datamodule.validation_pairs(self.num_pairs)  # type: ignore[attr-defined]
        outputs = cast(ImageToImage, pl_module).translate(inputs)  # checked by setup
        result = translation_metrics(outputs, targets)
        result |= fid_kid(
            self._features(trainer, pl_module.device), targets, outputs, self.kid_subset_size
        )
        self.last_metrics = {f"val/{name}": value for name, value in result.items()}
        log_at_iteration(trainer.loggers, self.last_metrics, pl_module.iteration)
        if trainer.is_global_zero:
            self.picture(trainer, pl_module, inputs, outputs, targets)

    def picture(
        self,
        trainer: L.Trainer,
        module: GANModule,
        inputs: Tensor,
        outputs: Tensor,
        targets: Tensor,
    ) -> Path:
        n = min(self.picture_pairs, len(inputs))
        channels = max(inputs.shape[1], targets.shape[1])
        triples = torch.stack(
            [t[:n].expand(-1, channels, -1, -1) for t in (inputs, outputs, targets)], dim=1
        ).flatten(0, 1)
        directory = Path(trainer.default_root_dir) / "samples"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"pairs_iter{module.iteration:07d}.png"
        options = {"nrow": 3 * 4, "normalize": True, "value_range": (-1.0, 1.0), "pad_value": 1.0}
        save_image(triples, path, **options)
        save_image(triples, directory / "pairs_last.png", **options)
        log_image(trainer.loggers, "pairs", path, module.iteration)
        return path

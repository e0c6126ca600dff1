"""The feature extractors image metrics are computed in, and how each is identified.

- ``classifier``: a small CNN trained once on the dataset's own labelled images
  (offline, cached by the data itself); its features only compare runs on the
  same data.
- ``inception``: the Inception-v3 of FID as papers compute it (torchmetrics'
  port of the TF graph, through torch-fidelity), from a local weights file or
  downloaded once.
- ``dinov2``: DINOv2's class token (ViT-L/14 by default), the space of
  FD-DINOv2 (Stein et al., 2023, who found it tracks human judgement of
  generated images better than Inception's), through timm.

An extractor's *identity* (its name and its weights' SHA-256) goes into every
cache key and every evaluation's JSON: figures from different weights are never
mixed.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from gan_template.data.images import ImageDataModule
from gan_template.harness.errors import UserInputError
from gan_template.metrics.classifier import (
    FeatureExtractor,
    SmallClassifier,
    load_or_train_classifier,
)
from gan_template.metrics.protocol import file_sha256, weights_sha256

#: The extractors by name (``--feature-extractor``, ``callbacks.image_eval.feature_extractor``).
EXTRACTORS = ("classifier", "inception", "dinov2")
#: DINOv2's network in timm by default (Stein et al. use ViT-L/14), and its input side.
DINOV2_MODEL = "vit_large_patch14_dinov2"
DINOV2_SIDE = 224


def default_cache_dir() -> Path:
    return Path(os.environ.get("GAN_TEMPLATE_CACHE", Path.home() / ".cache" / "gan_template"))


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


class DINOv2Features(nn.Module):
    """DINOv2's class-token features of images in [0, 1], grey made RGB (FD-DINOv2).

    As Stein et al.'s code (dgm-eval): the image resized to 224 x 224
    (bicubic), ImageNet's normalisation, the final class token. The network is
    timm's; ``weights`` is a local file, either timm's (``model.safetensors``
    of ``timm/vit_large_patch14_dinov2.lvd142m``) or Meta's
    (``dinov2_vitl14_pretrain.pth``, converted by timm's loader, which also
    resamples the position embeddings to the 16 x 16 patches of 224 px once,
    where Meta's model interpolates them at each call: figures may differ from
    dgm-eval's in the last digits). None downloads timm's once.

    Why timm: torchvision and torchmetrics have no DINOv2, and Meta's
    ``torch.hub`` entry needs its repository at run time as well as the weights.
    """

    def __init__(self, weights: str | None = None, model: str = DINOV2_MODEL) -> None:
        super().__init__()
        try:
            import timm
            from timm.models import load_checkpoint
            from timm.models.vision_transformer import checkpoint_filter_fn
        except ImportError as error:
            raise UserInputError(
                'the dinov2 feature extractor needs timm: pip install -e ".[dinov2]"'
            ) from error
        if weights is None:
            self.net = timm.create_model(
                f"{model}.lvd142m", pretrained=True, num_classes=0, img_size=DINOV2_SIDE
            )
        else:
            self.net = timm.create_model(
                model, pretrained=False, num_classes=0, img_size=DINOV2_SIDE
            )
            load_checkpoint(self.net, weights, filter_fn=checkpoint_filter_fn, strict=True)
        self.num_features: int = self.net.num_features  # type: ignore[assignment]
        self.mean: Tensor
        self.std: Tensor
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, images01: Tensor) -> Tensor:
        images = images01.expand(-1, 3, -1, -1)
        images = F.interpolate(images, size=(DINOV2_SIDE, DINOV2_SIDE), mode="bicubic")
        return self.net((images.clamp(0, 1) - self.mean) / self.std)


def build_extractor(
    name: str,
    datamodule: Any,
    cache_dir: Path,
    inception_weights: str | None = None,
    dinov2_weights: str | None = None,
    dinov2_model: str = DINOV2_MODEL,
    classifier: SmallClassifier | None = None,
) -> tuple[nn.Module, dict[str, str]]:
    """The extractor ``name`` in eval mode, and what identifies it (name and weights' hash).

    ``classifier``: the data's offline classifier when the caller has loaded it already.
    """
    if name == "dinov2":
        identity = {
            "name": f"dinov2 {dinov2_model} (timm), class token at {DINOV2_SIDE} px",
            "weights_sha256": file_sha256(dinov2_weights) if dinov2_weights else "downloaded",
        }
        return DINOv2Features(dinov2_weights, dinov2_model).eval(), identity
    if name == "inception":
        identity = {
            "name": "inception-v3-compat (torch-fidelity)",
            "weights_sha256": file_sha256(inception_weights) if inception_weights else "downloaded",
        }
        return InceptionFeatures(inception_weights).eval(), identity
    if name != "classifier":
        raise UserInputError(f"feature extractor {name!r}: choose one of {list(EXTRACTORS)}")
    if datamodule.num_classes < 2:
        raise UserInputError(
            f"the offline classifier's features need labelled images of at least 2 classes, "
            f"and data.name={datamodule.name} has {datamodule.num_classes}; use the Inception "
            "features instead (a local weights file works offline)"
        )
    if classifier is None:
        classifier, _ = offline_classifier(datamodule, cache_dir)
    return FeatureExtractor(classifier).eval(), {
        "name": "offline classifier (gan_template)",
        "weights_sha256": weights_sha256(classifier),
    }

"""Image quality: FID and KID through torchmetrics, and class coverage, with an offline feature extractor.

FID/KID compare feature statistics of real and generated images. Their usual
feature extractor, Inception-v3, downloads its weights on first use; where
there is no internet (tests, clusters without egress) a small classifier
trained on the dataset's own labelled images serves instead. Its FID is *not*
comparable with published Inception FIDs, but it ranks generators the same way
and moves the right way (tests check: trained < untrained, trained < collapsed).

Class coverage is the image analogue of the toy mode coverage: the classifier
labels each generated image; an image is *confident* when its top softmax
probability is at least ``confidence``; a class is *covered* when it is the
label of a confident image; the class KL is KL(p_gen || p_data) of the
confident images' class histogram against the data's.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SmallClassifier(nn.Module):
    """A two-block CNN; its 128-d penultimate layer is the offline feature space.

    Inputs are images in [0, 1] (what torchmetrics passes with ``normalize=True``).
    """

    num_features = 128

    def __init__(self, channels: int, resolution: int, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(64 * 16, self.num_features),
            nn.ReLU(),
        )
        self.classify = nn.Linear(self.num_features, num_classes)

    def features(self, images01: Tensor) -> Tensor:
        return self.body(images01.float())

    def forward(self, images01: Tensor) -> Tensor:
        return self.classify(self.features(images01))


class FeatureExtractor(nn.Module):
    """The classifier's features, as torchmetrics' FID/KID expect a ``feature`` module."""

    def __init__(self, classifier: SmallClassifier) -> None:
        super().__init__()
        self.classifier = classifier
        self.num_features = classifier.num_features

    def forward(self, images01: Tensor) -> Tensor:
        return self.classifier.features(images01)


def to_unit_range(images: Tensor) -> Tensor:
    """Generator range [-1, 1] -> [0, 1]."""
    return ((images.float() + 1) / 2).clamp(0, 1)


def train_classifier(
    images: Tensor,
    labels: Tensor,
    num_classes: int,
    epochs: int = 15,
    seed: int = 0,
    held_out: float = 0.15,
) -> tuple[SmallClassifier, float]:
    """Train on images in [-1, 1]; returns the classifier (eval mode) and its held-out accuracy."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(images), generator=generator)
    split = int(len(images) * (1 - held_out))
    train_idx, test_idx = order[:split], order[split:]
    x, y = to_unit_range(images), labels.long()
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(seed)
        model = SmallClassifier(images.shape[1], images.shape[-1], num_classes)
        optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
        for _ in range(epochs):
            for batch in train_idx[torch.randperm(len(train_idx), generator=generator)].split(128):
                # Small shifts make the features robust to the generators' imperfections.
                shifted = torch.roll(
                    x[batch], shifts=tuple(torch.randint(-1, 2, (2,)).tolist()), dims=(2, 3)
                )
                loss = F.cross_entropy(model(shifted), y[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    model.eval().requires_grad_(False)
    with torch.no_grad():
        accuracy = (model(x[test_idx]).argmax(1) == y[test_idx]).float().mean().item()
    return model, accuracy


def load_or_train_classifier(
    cache_file: Path, images: Tensor, labels: Tensor, num_classes: int
) -> tuple[SmallClassifier, float]:
    """The cached classifier for this data, trained and cached on first use."""
    if cache_file.is_file():
        state = torch.load(cache_file, map_location="cpu", weights_only=True)
        model = SmallClassifier(images.shape[1], images.shape[-1], num_classes)
        model.load_state_dict(state["weights"])
        return model.eval().requires_grad_(False), float(state["accuracy"])
    model, accuracy = train_classifier(images, labels, num_classes)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_suffix(".tmp")
    torch.save({"weights": model.state_dict(), "accuracy": accuracy}, tmp)
    tmp.replace(cache_file)  # atomic: concurrent runs never read half a file
    return model, accuracy


@dataclass(frozen=True)
class ClassCoverage:
    classes_covered: int
    num_classes: int
    confident: float  # fraction of samples classified with >= confidence
    class_kl: float  # KL(p_gen || p_data) over the confident samples' classes

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def class_coverage(
    logits: Tensor, data_class_probs: Tensor, confidence: float = 0.9
) -> ClassCoverage:
    """Coverage of the classes by confidently classified generated samples."""
    probs = logits.float().softmax(dim=1)
    top, label = probs.max(dim=1)
    sure = top >= confidence
    counts = torch.bincount(label[sure], minlength=probs.shape[1]).double()
    if counts.sum() > 0:
        p = counts / counts.sum()
        q = data_class_probs.double().clamp_min(1e-12)
        nonzero = p > 0
        kl = float((p[nonzero] * (p[nonzero] / q[nonzero]).log()).sum())
    else:
        kl = float("inf")
    return ClassCoverage(int((counts > 0).sum()), probs.shape[1], float(sure.float().mean()), kl)


def fid_kid(
    extractor: nn.Module, real: Tensor, fake: Tensor, kid_subset_size: int = 500
) -> dict[str, float]:
    """FID and KID (mean, std) between two sets of images in [-1, 1], in ``extractor``'s feature space."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    subset = min(kid_subset_size, len(real), len(fake))
    fid = FrechetInceptionDistance(feature=extractor, normalize=True)
    with warnings.catch_warnings():
        # KID keeps all features in memory, which is the point: a few thousand at most here.
        warnings.filterwarnings("ignore", message=".*will save all extracted features")
        kid = KernelInceptionDistance(feature=extractor, normalize=True, subset_size=subset)
    for images, is_real in ((real, True), (fake, False)):
        for chunk in to_unit_range(images).split(500):
            fid.update(chunk, real=is_real)
            kid.update(chunk, real=is_real)
    kid_mean, kid_std = kid.compute()
    return {"fid": float(fid.compute()), "kid_mean": float(kid_mean), "kid_std": float(kid_std)}

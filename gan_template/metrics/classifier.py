"""The offline feature extractor for FID/KID: a small classifier trained on the data's labels.

FID/KID's usual feature extractor, Inception-v3, downloads its weights on
first use; where there is no internet (tests, clusters without egress) this
classifier, trained on the dataset's own labelled images and cached, serves
instead. Its FID is *not* comparable with published Inception FIDs, but it
ranks generators the same way and moves the right way (tests check: trained <
untrained, trained < collapsed). It also labels generated images for class
coverage (``images.class_coverage``).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan_template.harness.checkpoint_io import write_atomically
from gan_template.metrics.images import to_unit_range


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
    state = {"weights": model.state_dict(), "accuracy": accuracy}
    # Concurrent runs (a sweep) never read half a file.
    write_atomically(cache_file, lambda file: torch.save(state, file))
    return model, accuracy

"""Image quality: FID and KID through torchmetrics, precision/recall/density/coverage, class coverage.

FID/KID compare feature statistics of real and generated images in a feature
extractor's space (Inception-v3, or the offline classifier of ``classifier.py``);
precision, recall, density and coverage (``prdc.py``) use the same features and
tell fidelity from diversity.

Class coverage is the image analogue of the toy mode coverage: the classifier
labels each generated image; an image is *confident* when its top softmax
probability is at least ``confidence``; a class is *covered* when it is the
label of a confident image; the class KL is KL(p_gen || p_data) of the
confident images' class histogram against the data's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn


def to_unit_range(images: Tensor) -> Tensor:
    """Generator range [-1, 1] -> [0, 1]."""
    return ((images.float() + 1) / 2).clamp(0, 1)


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


#: The k of precision/recall and of density/coverage (Naeem et al., 2020, use 5 for both;
#: Kynkaanniemi et al., 2019, 3 for precision/recall).
PRDC_NEAREST_K = (3, 5)


def fid_kid(
    extractor: nn.Module, real: Tensor, fake: Tensor, kid_subset_size: int = 500
) -> dict[str, float]:
    """FID, KID (mean, std), precision, recall, density and coverage of two sets of images in [-1, 1].

    All in ``extractor``'s feature space, each image embedded once
    (``metrics/protocol.py``, which the evaluations use on streams of batches).
    """
    from gan_template.metrics.protocol import BATCH_SIZE, embed, feature_metrics

    device = next(extractor.parameters(), torch.empty(0)).device

    def features(images: Tensor) -> Tensor:
        return torch.cat([embed(extractor, chunk, device) for chunk in images.split(BATCH_SIZE)])

    return feature_metrics(features(real), features(fake), kid_subset_size)

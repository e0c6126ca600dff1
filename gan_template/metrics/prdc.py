"""Precision, recall, density and coverage of generated samples, as a torchmetrics metric.

Fidelity and diversity measured apart, from k-nearest-neighbour balls in a
feature space (the same features as FID/KID):

- *precision* (Kynkäänniemi et al., 2019): the fraction of generated samples
  inside at least one real sample's ball (radius: the distance to its k-th
  nearest real neighbour, k = 3); *recall*: the fraction of real samples inside
  at least one generated sample's ball (radii among the generated samples).
- *density* (Naeem et al., 2020): how many real balls contain each generated
  sample, over k (k = 5): robust to outliers, about 1 when the distributions
  match, above 1 for samples packed where the data is dense; *coverage*: the
  fraction of real samples whose ball (k = 5) contains a generated sample.

Dropping a mode lowers recall and coverage, not precision; samples off the data
lower precision and density, not recall (``tests/test_prdc.py``).

Why written here: torchmetrics (1.x) has none of the four; the ``prdc``
package is unmaintained since 2020; torch-fidelity's version may swap
precision and recall (its issue 58). The features are kept as ``cat`` states,
so under DDP every rank computes the metric of all ranks' samples.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


def kth_neighbour_distances(points: Tensor, k: int, chunk_size: int = 1024) -> Tensor:
    """Distance from each point to its k-th nearest *other* point of the set."""
    if len(points) <= k:
        raise ValueError(
            f"{len(points)} samples cannot give a {k}-th nearest neighbour: use more than {k}"
        )
    radii = []
    for chunk in points.split(chunk_size):
        distances = torch.cdist(chunk, points)
        # The point itself is its nearest neighbour at distance 0: take the (k+1)-th smallest.
        radii.append(distances.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(radii)


def inside_counts(queries: Tensor, centres: Tensor, radii: Tensor, chunk_size: int) -> Tensor:
    """For each query, how many of the balls (centres, radii) contain it."""
    counts = []
    for chunk in queries.split(chunk_size):
        counts.append((torch.cdist(chunk, centres) <= radii.unsqueeze(0)).sum(dim=1))
    return torch.cat(counts)


def precision_recall_density_coverage(
    real: Tensor,
    fake: Tensor,
    precision_recall_k: int = 3,
    density_coverage_k: int = 5,
    chunk_size: int = 1024,
) -> dict[str, float]:
    """The four metrics of ``fake`` against ``real`` (2-d feature tensors, one row per sample)."""
    real, fake = (
        real.double(),
        fake.double(),
    )  # exact ties of distances to radii, as the O(n^2) form
    real_radii = kth_neighbour_distances(real, precision_recall_k, chunk_size)
    fake_radii = kth_neighbour_distances(fake, precision_recall_k, chunk_size)
    precision = (inside_counts(fake, real, real_radii, chunk_size) > 0).double().mean()
    recall = (inside_counts(real, fake, fake_radii, chunk_size) > 0).double().mean()
    if density_coverage_k == precision_recall_k:
        dc_radii = real_radii
    else:
        dc_radii = kth_neighbour_distances(real, density_coverage_k, chunk_size)
    density = inside_counts(fake, real, dc_radii, chunk_size).double().sum() / (
        density_coverage_k * len(fake)
    )
    # Coverage: a real ball holds a generated sample when its nearest one lies within the radius.
    nearest = torch.cat([torch.cdist(c, fake).min(dim=1).values for c in real.split(chunk_size)])
    coverage = (nearest <= dc_radii).double().mean()
    return {
        "precision": float(precision),
        "recall": float(recall),
        "density": float(density),
        "coverage": float(coverage),
    }


class PrecisionRecallDensityCoverage(Metric):
    """Precision, recall (k = 3), density and coverage (k = 5), as FID's torchmetrics API.

    ``update(images, real=True/False)`` with images in [0, 1] when ``feature``
    is given (the same extractor as FID/KID), or with feature rows when it is
    None. ``compute()`` returns a dict of the four floats.
    """

    higher_is_better = True
    full_state_update = False
    is_differentiable = False

    real_features: list[Tensor]
    fake_features: list[Tensor]

    def __init__(
        self,
        feature: Callable[[Tensor], Tensor] | None = None,
        precision_recall_k: int = 3,
        density_coverage_k: int = 5,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        for name, k in (
            ("precision_recall_k", precision_recall_k),
            ("density_coverage_k", density_coverage_k),
        ):
            if k < 1:
                raise ValueError(f"{name}={k}: must be >= 1")
        self.feature = feature
        self.precision_recall_k = precision_recall_k
        self.density_coverage_k = density_coverage_k
        self.add_state("real_features", default=[], dist_reduce_fx="cat")
        self.add_state("fake_features", default=[], dist_reduce_fx="cat")

    def update(self, samples: Tensor, real: bool) -> None:
        features = self.feature(samples) if self.feature is not None else samples
        features = features.detach().flatten(1).float()
        (self.real_features if real else self.fake_features).append(features)

    def compute(self) -> dict[str, float]:
        # Lists of batches here; one tensor each after a DDP sync (torchmetrics concatenates).
        if any(isinstance(s, list) and not s for s in (self.real_features, self.fake_features)):
            raise ValueError("update() with real=True and real=False samples before compute()")
        return precision_recall_density_coverage(
            dim_zero_cat(self.real_features),
            dim_zero_cat(self.fake_features),
            self.precision_recall_k,
            self.density_coverage_k,
        )

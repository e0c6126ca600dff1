"""One evaluation protocol, for ``gan_template.evaluate`` and the evaluation during training.

Every image evaluation here goes the same way, at any N:

1. the *reference* features: real images embedded batch by batch (never all of
   them in memory), cached on disk per (data, subset, extractor and its
   weights), so a run's evaluations and every later ``evaluate`` reuse them;
2. the *generated* features: batch ``b`` of the N samples drawn from its own
   seed ``(seed, b)``, embedded by rank ``b mod K`` of K processes, gathered in
   batch order, so K processes give one process's figures;
3. FID and KID (torchmetrics, on the features) and precision, recall, density
   and coverage (``prdc.py``) of the two feature sets.

Only features are kept (2,048 floats an image for Inception), never N images:
that is what bounds the memory of a 50,000-sample evaluation.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import Tensor, nn

from gan_template import models
from gan_template.harness.checkpoint_io import write_atomically

#: Images embedded at once (samples and reference).
BATCH_SIZE = 500
#: Bumped when what a cached reference file holds changes.
REFERENCE_CACHE_VERSION = 2


class RealImages(Protocol):
    """What the protocol reads of a data module (``ImageDataModule``, ``LatentDataModule``)."""

    name: str
    resolution: int
    channels: int

    def real_batches(
        self, n: int | None, seed: int, batch_size: int
    ) -> Iterator[tuple[Tensor, Tensor]]: ...

    def real_fingerprint(self, n: int | None, seed: int) -> str: ...


class PassThrough(nn.Module):
    """Features in, features out: torchmetrics' FID and KID take a feature module; ours ran already."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


def feature_metrics(
    real: Tensor, fake: Tensor, kid_subset_size: int = 1000, kid_seed: int = 0
) -> dict[str, float]:
    """FID, KID (mean, std), precision, recall, density and coverage of two feature sets."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    from gan_template.metrics.images import PRDC_NEAREST_K
    from gan_template.metrics.prdc import precision_recall_density_coverage

    features = PassThrough(real.shape[1])
    # The features are complete on every rank (gathered): no sync of their own.
    fid = FrechetInceptionDistance(feature=features, sync_on_compute=False)
    kid = KernelInceptionDistance(
        feature=features,
        subset_size=min(kid_subset_size, len(real), len(fake)),
        sync_on_compute=False,
    )
    for chunks, is_real in ((real.split(BATCH_SIZE), True), (fake.split(BATCH_SIZE), False)):
        for chunk in chunks:
            fid.update(chunk, real=is_real)
            kid.update(chunk, real=is_real)
    with torch.random.fork_rng():  # KID draws its subsets from the global generator
        torch.manual_seed(kid_seed)
        kid_mean, kid_std = kid.compute()
    prdc = precision_recall_density_coverage(real, fake, *PRDC_NEAREST_K)
    return {"fid": float(fid.compute()), "kid_mean": float(kid_mean), "kid_std": float(kid_std)} | {
        name: float(value) for name, value in prdc.items()
    }


@torch.no_grad()
def embed(extractor: nn.Module, images: Tensor, device: str | torch.device) -> Tensor:
    """Features of images in [-1, 1], on the CPU as float32."""
    from gan_template.metrics.images import to_unit_range

    return extractor(to_unit_range(images.to(device))).float().cpu()


def sample_labels(start: int, count: int, num_classes: int) -> Tensor:
    """The classes of samples ``start .. start + count``: every class in turn (balanced)."""
    return torch.arange(start, start + count) % num_classes


@torch.no_grad()
def generated_features(
    generator: nn.Module,
    extractors: Mapping[str, nn.Module],
    n: int,
    seed: int,
    device: str | torch.device,
    rank: int = 0,
    world_size: int = 1,
    batch_size: int = BATCH_SIZE,
) -> dict[int, dict[str, Tensor]]:
    """Each extractor's features of this rank's batches of the ``n`` samples, by batch index.

    Batch ``b`` draws its noise from a CPU generator seeded by ``(seed, b)``, so
    a batch's samples depend neither on the rank that makes it nor on the
    device; each batch is embedded and dropped (no n images held).
    """
    classes = models.num_classes(generator)
    features = {}
    for index, start in enumerate(range(0, n, batch_size)):
        if index % world_size != rank:
            continue
        count = min(batch_size, n - start)
        rng = torch.Generator().manual_seed(seed * 1_000_003 + index)
        noise = torch.randn(count, models.latent_dim(generator), generator=rng)
        labels = sample_labels(start, count, classes) if classes else None
        images = models.generate(generator, noise, labels)
        features[index] = {name: embed(net, images, device) for name, net in extractors.items()}
    return features


def gathered(features: dict[int, dict[str, Tensor]], world_size: int) -> dict[str, Tensor]:
    """Every rank's batches of features, in batch order (on every rank), by extractor."""
    parts: list[dict[int, dict[str, Tensor]]] = [features]
    if world_size > 1:
        parts = [{} for _ in range(world_size)]
        dist.all_gather_object(parts, features)
    merged = {index: batch for part in parts for index, batch in part.items()}
    ordered = [merged[index] for index in sorted(merged)]
    return {name: torch.cat([batch[name] for batch in ordered]) for name in ordered[0]}


def reference_features(
    data: RealImages,
    extractor: nn.Module,
    extractor_id: str,
    cache_dir: Path,
    device: str | torch.device,
    n: int | None = None,
    seed: int = 0,
) -> tuple[Tensor, dict[str, Any]]:
    """Features of ``n`` real images (None: every one), cached per (data, n, extractor).

    The images stream through the extractor a batch at a time. The cache key
    holds the data's fingerprint (its size and a spread of its images and
    files), so changed data is embedded afresh, never read from a stale file.
    """
    reference = {
        "data": data.name,
        "size": n or "all",
        "seed": seed,
        "resolution": data.resolution,
        "channels": data.channels,
        "fingerprint": data.real_fingerprint(n, seed),
    }
    key = json.dumps([REFERENCE_CACHE_VERSION, reference, extractor_id], sort_keys=True)
    path = cache_dir / f"reference_{data.name}_{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"
    if path.is_file():
        features = torch.load(path, weights_only=True)
        return features, reference | {"size": len(features), "cache": str(path), "cached": True}
    features = torch.cat(
        [embed(extractor, images, device) for images, _ in data.real_batches(n, seed, BATCH_SIZE)]
    )
    write_atomically(path, lambda file: torch.save(features, file))
    return features, reference | {"size": len(features), "cache": str(path), "cached": False}


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(module: nn.Module) -> str:
    """A hash of a network's weights (an extractor trained here has no file to hash)."""
    digest = hashlib.sha256()
    for tensor in module.state_dict().values():
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()

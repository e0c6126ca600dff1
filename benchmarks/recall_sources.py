"""Where a run's recall comes from: its samples on the data, or those off it.

    python benchmarks/recall_sources.py RUN/checkpoints/last.ckpt [CKPT ...] --m 700

Recall (Kynkäänniemi et al., 2019) counts the real images inside some
generated sample's ball, whose radius is the distance to its k-th nearest
generated neighbour. A sample off the data sits far from the others, so its
ball is wide: outliers can raise recall without resembling anything (Naeem et
al., 2020, who proposed coverage for that). Two runs' recalls compare only
once that is ruled out. For each checkpoint (its EMA generator; the features
of the end-of-run evaluation; every real image; ``--samples-per-real`` times as
many samples) this prints:

- precision, recall and coverage at as many samples as real images;
- ``on data``: the fraction of samples inside some real image's ball;
- recall of ``--m`` samples drawn at random, and of ``--m`` drawn among those
  on the data (mean ± std over ``--repeats`` draws): when outliers make the
  recall, the second is the lower;
- recall per class of the real images: one class low is a dropped mode, every
  class low is samples narrower than the data;
- spread: the median k-th neighbour distance among samples over that among
  the real images (below 1: the samples sit tighter than the data).
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import dataclass

import torch
from torch import Tensor

from gan_template.metrics.prdc import (
    inside_counts,
    kth_neighbour_distances,
    precision_recall_density_coverage,
)

K = 3  # the k of precision and recall, as prdc.py's default


@dataclass
class RecallSources:
    precision: float
    recall: float
    coverage: float
    on_data: float
    recall_random: list[float]
    recall_on_data: list[float]
    recall_per_class: list[float]
    spread: float

    def line(self, name: str, m: int) -> str:
        def mean_std(values: list[float]) -> str:
            return f"{statistics.mean(values):.3f} ± {statistics.pstdev(values):.3f}"

        per_class = " ".join(f"{r:.2f}" for r in self.recall_per_class)
        return (
            f"{name}: P {self.precision:.3f} R {self.recall:.3f} C {self.coverage:.3f} | "
            f"on data {self.on_data:.3f} | recall of {m} at random {mean_std(self.recall_random)}, "
            f"of {m} on the data {mean_std(self.recall_on_data)} | spread {self.spread:.2f}"
            + (f" | recall per class {per_class}" if per_class else "")
        )


def covered(real: Tensor, fake: Tensor) -> Tensor:
    """Which real rows lie inside some fake row's k-NN ball (recall's test, per real row)."""
    return inside_counts(real, fake, kth_neighbour_distances(fake, K), 1024) > 0


def recall_sources(
    real: Tensor, fake: Tensor, m: int, repeats: int = 5, labels: Tensor | None = None
) -> RecallSources:
    """The figures above, from feature rows (``fake``: at least as many rows as ``real``)."""
    real, fake = real.double(), fake.double()
    if len(fake) < len(real):
        raise ValueError(f"{len(fake)} samples for {len(real)} real images: give at least as many")
    on = inside_counts(fake, real, kth_neighbour_distances(real, K), 1024) > 0
    if int(on.sum()) < m:
        raise ValueError(
            f"only {int(on.sum())} of {len(fake)} samples lie on the data: use a smaller --m or "
            "a larger --samples-per-real"
        )
    figures = precision_recall_density_coverage(real, fake[: len(real)], K)
    draws = [
        torch.randperm(len(fake), generator=torch.Generator().manual_seed(r))
        for r in range(repeats)
    ]
    on_rows = fake[on]
    at_random = [covered(real, fake[d[:m]]).double().mean().item() for d in draws]
    on_data = [
        covered(real, on_rows[d[d < len(on_rows)][:m]]).double().mean().item() for d in draws
    ]
    per_class: list[float] = []
    if labels is not None:
        hit = covered(real, fake[: len(real)])
        per_class = [hit[labels == c].double().mean().item() for c in labels.unique().tolist()]
    spread = (
        kth_neighbour_distances(fake[: len(real)], K).median()
        / kth_neighbour_distances(real, K).median()
    )
    return RecallSources(
        figures["precision"], figures["recall"], figures["coverage"], on.double().mean().item(),
        at_random, on_data, per_class, float(spread),
    )  # fmt: skip


def checkpoint_features(
    ckpt: str, samples_per_real: int, seed: int
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Real features, sample features and real labels (None: unlabelled), as ``evaluate`` makes them."""
    from gan_template.evaluate import feature_extractor, parse_args
    from gan_template.harness.train import build
    from gan_template.metrics.protocol import gathered, generated_features, reference_features
    from gan_template.sample import load_generator

    args = parse_args([ckpt, "--seed", str(seed), "--device", "cpu"])
    generator, cfg = load_generator(ckpt, use_ema=True, device=args.device)
    datamodule = build(cfg.data, "data")
    datamodule.setup("fit")
    extractor, extractor_id = feature_extractor(args, datamodule, args.cache_dir)
    real, _ = reference_features(
        datamodule, extractor, json.dumps(extractor_id, sort_keys=True), args.cache_dir,
        args.device, seed=seed,
    )  # fmt: skip
    labels = torch.cat([batch_labels for _, batch_labels in datamodule.real_batches(None, seed)])
    n = samples_per_real * len(real)
    fake = gathered(generated_features(generator, {"f": extractor}, n, seed, args.device), 1)["f"]
    return real, fake, (labels if datamodule.num_classes > 1 else None)


def main(argv: list[str] | None = None) -> list[RecallSources]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("ckpts", nargs="+", help="checkpoints of runs on images")
    parser.add_argument("--m", type=int, default=700, help="samples a draw (default 700)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--samples-per-real", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    results = []
    for ckpt in args.ckpts:
        real, fake, labels = checkpoint_features(ckpt, args.samples_per_real, args.seed)
        results.append(recall_sources(real, fake, args.m, args.repeats, labels))
        print(results[-1].line(ckpt, args.m), flush=True)
    return results


if __name__ == "__main__":
    main()

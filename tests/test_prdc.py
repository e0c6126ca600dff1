"""Precision, recall, density and coverage: known answers, a direct O(n^2) form, and DDP."""

from __future__ import annotations

import itertools
import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gan_template.metrics.prdc import (
    PrecisionRecallDensityCoverage,
    kth_neighbour_distances,
    precision_recall_density_coverage,
)


def direct(real: list[list[float]], fake: list[list[float]], k_pr: int, k_dc: int) -> dict:
    """The definitions, pair by pair in plain Python (Kynkäänniemi et al. 2019; Naeem et al. 2020)."""

    def radius(points: list[list[float]], i: int, k: int) -> float:
        others = sorted(math.dist(points[i], p) for j, p in enumerate(points) if j != i)
        return others[k - 1]

    r_real = [radius(real, i, k_pr) for i in range(len(real))]
    r_fake = [radius(fake, i, k_pr) for i in range(len(fake))]
    r_dc = [radius(real, i, k_dc) for i in range(len(real))]
    precision = sum(
        any(math.dist(f, r) <= rr for r, rr in zip(real, r_real, strict=True)) for f in fake
    ) / len(fake)
    recall = sum(
        any(math.dist(r, f) <= rf for f, rf in zip(fake, r_fake, strict=True)) for r in real
    ) / len(real)
    density = sum(
        math.dist(f, r) <= rr
        for f, (r, rr) in itertools.product(fake, zip(real, r_dc, strict=True))
    ) / (k_dc * len(fake))
    coverage = sum(
        min(math.dist(r, f) for f in fake) <= rr for r, rr in zip(real, r_dc, strict=True)
    ) / len(real)
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


def test_matches_the_direct_pairwise_definitions() -> None:
    rng = torch.Generator().manual_seed(0)
    real = torch.randn(70, 4, generator=rng)
    fake = torch.randn(55, 4, generator=rng) * 1.3 + 0.4
    got = precision_recall_density_coverage(real, fake, 3, 5, chunk_size=16)  # chunks too
    expected = direct(real.double().tolist(), fake.double().tolist(), 3, 5)
    assert got == pytest.approx(expected, abs=1e-12)
    assert 0 < got["precision"] < 1 and 0 < got["recall"] < 1  # not a trivial case


def two_blobs(n: int, seed: int, dims: int = 8) -> torch.Tensor:
    rng = torch.Generator().manual_seed(seed)
    centres = torch.zeros(2, dims)
    centres[1, 0] = 20.0
    return centres[torch.arange(n) % 2] + torch.randn(n, dims, generator=rng)


def test_a_dropped_mode_lowers_recall_and_coverage_not_precision() -> None:
    real = two_blobs(1000, seed=1)
    matched = precision_recall_density_coverage(real, two_blobs(1000, seed=2))
    one_mode = two_blobs(2000, seed=3)[::2]  # the first blob only, as many samples
    dropped = precision_recall_density_coverage(real, one_mode)
    # k = 3 in 8 dimensions: matched sets of 1,000 score about 0.85-0.9 (as in the papers).
    assert matched["precision"] > 0.8 and matched["recall"] > 0.8, matched
    assert matched["coverage"] > 0.85 and 0.8 < matched["density"] < 1.2, matched
    assert dropped["precision"] > 0.8, dropped  # every sample still looks real
    assert dropped["recall"] == pytest.approx(matched["recall"] / 2, abs=0.05)
    assert dropped["coverage"] == pytest.approx(matched["coverage"] / 2, abs=0.05)


def test_samples_off_the_data_lower_precision_and_density_not_recall() -> None:
    real = two_blobs(1000, seed=1)
    off = two_blobs(1000, seed=2)
    off[:300] = 0.1 * torch.randn(300, 8, generator=torch.Generator().manual_seed(4)) - 30.0
    result = precision_recall_density_coverage(real, off)
    on_data = precision_recall_density_coverage(real, off[300:])  # the 700 samples on the data
    assert on_data["precision"] > 0.8 and on_data["recall"] > 0.8, on_data
    assert result["precision"] == pytest.approx(0.7 * on_data["precision"]), result
    assert result["density"] == pytest.approx(0.7 * on_data["density"]), result
    # The 300 off the data cover nothing of it: recall and coverage are those of the 700.
    assert result["recall"] == pytest.approx(on_data["recall"]), result
    assert result["coverage"] == pytest.approx(on_data["coverage"]), result


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric:UserWarning")
def test_the_metric_accumulates_features_and_checks_its_input() -> None:
    real, fake = two_blobs(200, seed=1), two_blobs(200, seed=2)
    metric = PrecisionRecallDensityCoverage()
    for chunk in real.split(64):
        metric.update(chunk, real=True)
    for chunk in fake.split(64):
        metric.update(chunk, real=False)
    assert metric.compute() == pytest.approx(precision_recall_density_coverage(real, fake))
    doubled = PrecisionRecallDensityCoverage(feature=lambda x: 2 * x)  # distances scale alike
    doubled.update(real, real=True)
    doubled.update(fake, real=False)
    assert doubled.compute() == pytest.approx(metric.compute())
    with pytest.raises(ValueError, match="before compute"):
        PrecisionRecallDensityCoverage().compute()
    with pytest.raises(ValueError, match="cannot give a 3-th nearest neighbour"):
        kth_neighbour_distances(torch.randn(3, 2), k=3)


def _rank(rank: int, port: int, real: torch.Tensor, fake: torch.Tensor, results: dict) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        metric = PrecisionRecallDensityCoverage()
        # Uneven shards: rank 0 holds more real and fewer generated samples than rank 1.
        cut_real, cut_fake = 130, 70
        metric.update(real[:cut_real] if rank == 0 else real[cut_real:], real=True)
        metric.update(fake[:cut_fake] if rank == 0 else fake[cut_fake:], real=False)
        results[rank] = metric.compute()
    finally:
        dist.destroy_process_group()


def test_under_ddp_every_rank_computes_the_metric_of_all_samples() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    real, fake = two_blobs(200, seed=1), two_blobs(180, seed=5) * 1.2
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_rank, args=(port, real, fake, results), nprocs=2, join=True)
        by_rank = dict(results)
    expected = precision_recall_density_coverage(real, fake)
    assert by_rank[0] == pytest.approx(expected)
    assert by_rank[1] == pytest.approx(expected)

"""Epoch aggregates: device-side means of the step outputs, written once per epoch."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from helpers import run, without_evaluation

from gan_template.loggers import EpochMeans


def test_epoch_means_handles_steps_with_different_metrics() -> None:
    means = EpochMeans()
    means.update({"d_loss": torch.tensor(1.0), "g_loss": torch.tensor(4.0)})
    means.update(
        {"d_loss": torch.tensor(3.0), "g_loss": torch.tensor(2.0), "d_penalty": torch.tensor(0.5)}
    )
    means.update({"d_loss": torch.tensor(5.0), "g_loss": torch.tensor(0.0)})
    result = {name: value.item() for name, value in means.compute().items()}
    assert result == pytest.approx({"d_loss": 3.0, "g_loss": 2.0, "d_penalty": 0.5})


def test_epoch_means_reduce_over_ranks_and_reset() -> None:
    means = EpochMeans()
    means.update({"a": torch.tensor(2.0), "b": torch.tensor(bfloat := 1.0, dtype=torch.bfloat16)})
    seen = []

    def reduce(tensor: torch.Tensor) -> torch.Tensor:
        seen.append(tensor.clone())
        return tensor * 10  # stands in for the mean over ranks

    assert {k: v.item() for k, v in means.compute(reduce).items()} == {"a": 20.0, "b": 10 * bfloat}
    assert len(seen) == 1 and seen[0].dtype == torch.float32  # one collective for all metrics
    means.reset()
    assert means.compute() == {}


def test_epoch_means_are_logged_at_the_end_of_each_epoch(make_config, tmp_path: Path) -> None:
    # 512 samples / batch 128 = 4 iterations per epoch: epochs end at 4 and 8,
    # and stopping at 10 ends the third one after 2 iterations.
    cfg = without_evaluation(
        make_config(
            "experiment=ring",
            "data.num_samples=512",
            "data.batch_size=128",
            "train.iterations=10",
        )
    )
    run(cfg)
    with open(tmp_path / "run" / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    epoch_rows = [row for row in rows if row.get("epoch/d_loss")]
    assert [int(row["step"]) for row in epoch_rows] == [4, 8, 10]
    step_rows = {int(row["step"]): row for row in rows if row.get("train/d_loss")}
    for row, steps in zip(epoch_rows, (range(1, 5), range(5, 9), range(9, 11)), strict=True):
        expected = sum(float(step_rows[i]["train/d_loss"]) for i in steps) / len(steps)
        assert float(row["epoch/d_loss"]) == pytest.approx(expected, rel=1e-5)
        assert 0.0 <= float(row["epoch/d_accuracy_real"]) <= 1.0

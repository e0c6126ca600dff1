"""Epoch aggregates: device-side means of the step outputs, written once per epoch."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import StepRecorder, run, without_evaluation
from PIL import Image

from gan_template.harness.loggers import EpochMeans
from gan_template.module import GANModule


def read_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as file:
        return list(csv.DictReader(file))


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
            "train.diagnostics=every_iteration",  # D's statistics in the epoch means too
        )
    )
    run(cfg)
    rows = read_rows(tmp_path / "run")
    epoch_rows = [row for row in rows if row.get("epoch/d_loss")]
    assert [int(row["step"]) for row in epoch_rows] == [4, 8, 10]
    step_rows = {int(row["step"]): row for row in rows if row.get("train/d_loss")}
    for row, steps in zip(epoch_rows, (range(1, 5), range(5, 9), range(9, 11)), strict=True):
        expected = sum(float(step_rows[i]["train/d_loss"]) for i in steps) / len(steps)
        assert float(row["epoch/d_loss"]) == pytest.approx(expected, rel=1e-5)
        assert 0.0 <= float(row["epoch/d_accuracy_real"]) <= 1.0


def test_diagnostics_on_log_steps_only_log_the_same_rows(make_config, tmp_path: Path) -> None:
    """Measuring D's statistics and the norms on log steps alone changes no logged value.

    The same run (4 iterations per epoch, 10 in all) with the diagnostics measured
    on every iteration, and only on the iterations that log (every 3rd): every
    ``train/*`` row of the second is the first's at that step, value for value; the
    epoch means of the losses are the same, and the second keeps none of the
    diagnostics' (they would be means over its log steps alone).
    """
    common = ["experiment=ring", "data.num_samples=512", "data.batch_size=128"]
    common += ["train.iterations=10", "trainer.log_every_n_steps=3", "penalty=r1"]
    rows = {}
    for diagnostics in ("every_iteration", "log_steps"):
        run_dir = tmp_path / diagnostics
        cfg = make_config(*common, f"train.diagnostics={diagnostics}", run_dir=run_dir)
        run(without_evaluation(cfg))
        rows[diagnostics] = read_rows(run_dir)

    def train_rows(name: str) -> dict[int, dict[str, str]]:
        return {
            int(row["step"]): {k: v for k, v in row.items() if k.startswith("train/") and v}
            for row in rows[name]
            if row.get("train/d_loss")
        }

    every, lean = train_rows("every_iteration"), train_rows("log_steps")
    assert sorted(lean) == [3, 6, 9, 10] and lean == every
    assert {"train/d_real", "train/d_grad_norm", "train/g_grad_norm"} <= lean[3].keys()

    def epoch_rows(name: str) -> list[dict[str, str]]:
        return [
            {k: v for k, v in row.items() if k.startswith("epoch/") and v}
            for row in rows[name]
            if row.get("epoch/d_loss")
        ]

    full, means = epoch_rows("every_iteration"), epoch_rows("log_steps")
    assert len(means) == 3 and all(m.items() <= f.items() for m, f in zip(means, full, strict=True))
    names = {name.removeprefix("epoch/") for row in means for name in row}
    assert names == {"d_loss", "g_loss", "d_penalty"} and not names & GANModule.DIAGNOSTICS


def test_every_train_row_shows_the_last_value_of_a_lazy_regulariser(
    make_config, tmp_path: Path
) -> None:
    """R1 every 4th D update, a row every 3rd iteration: the rows at 3, 6 and 9 fall between
    the updates that carry it (0, 4, 8), yet each shows the last value computed."""
    cfg = make_config(
        "experiment=ring",
        "data.num_samples=512",
        "train.iterations=9",
        "trainer.log_every_n_steps=3",
        "penalty=r1",
        "penalty.interval=4",
        run_dir=tmp_path / "run",
    )
    recorder = StepRecorder()
    run(without_evaluation(cfg), recorder)
    carried = [out["d_penalty"].item() for out in recorder.outputs if "d_penalty" in out]
    assert len(carried) == 3  # iterations 0, 4, 8
    rows = {int(r["step"]): r for r in read_rows(tmp_path / "run") if r.get("train/d_loss")}
    shown = [float(rows[step]["train/d_penalty"]) for step in (3, 6, 9)]
    assert shown == pytest.approx([carried[0], carried[1], carried[2]])


def test_the_curves_picture_draws_each_logged_metric_and_leaves_out_the_others(
    tmp_path: Path,
) -> None:
    from gan_template.callbacks.curves import plot_curves

    table = tmp_path / "metrics.csv"
    table.write_text(
        "step,train/d_loss,train/g_loss,image/fid\n"
        "10,1.2,0.7,\n20,1.1,0.8,\n20,,,35.5\n30,nan,0.9,\n40,1.0,1.0,20.25\n"
    )
    picture = tmp_path / "curves.png"
    drawn = plot_curves(
        table, picture, ["train/d_loss", "image/fid", "image/recall", "train/g_loss"]
    )
    assert drawn == ["train/d_loss", "image/fid", "train/g_loss"]  # recall was never logged
    assert Image.open(picture).size == (1000, 600)  # 2 columns x 2 rows of 5 x 3 inches at 100 dpi


def test_a_run_draws_its_curves_at_the_end(digits_run: dict) -> None:
    picture = Path(digits_run["run_dir"]) / "curves.png"
    assert Image.open(picture).size[0] == 1000
    pixels = np.asarray(Image.open(picture).convert("L"), dtype=np.float32)
    assert pixels.std() > 10  # lines and labels, not a blank page

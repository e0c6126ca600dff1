"""DDP with 2 CPU processes (gloo), through the real command line, with a hang timeout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

pytestmark = pytest.mark.ddp


def run_ddp(
    run_dir: Path, *overrides: str, timeout: float = 240, experiment: str = "ring"
) -> list[dict]:
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO_ROOT / 'tests'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    command = [
        sys.executable, "-m", "gan_template", "trainer=ddp_cpu", f"experiment={experiment}", "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1", "+callbacks.rank_report._target_=ddp_probe.RankReport", "extra_target_prefixes=[ddp_probe.]",
        f"hydra.run.dir={run_dir}", *overrides,
    ]  # fmt: skip
    # A rank that skips a backward the other runs hangs in the all-reduce: the timeout turns that into a failure.
    completed = subprocess.run(
        command, cwd=run_dir.parent, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return [json.loads((run_dir / f"rank{rank}.json").read_text()) for rank in (0, 1)]


def test_two_ranks_train_without_find_unused_parameters_and_stay_identical(tmp_path: Path) -> None:
    reports = run_ddp(
        tmp_path / "run",
        "train.iterations=12",
        "train.n_critic=2",
        "penalty=r1",
        "penalty.interval=4",
        "regularizers=[path_length]",  # a generator regulariser, with a running mean
        "regularizers.path_length.interval=3",
    )
    assert [r["world_size"] for r in reports] == [2, 2]
    assert [r["iteration"] for r in reports] == [12, 12]
    assert reports[0]["weights_sha256"] == reports[1]["weights_sha256"]
    # Each rank draws its own latents, yet path length's running mean moves alike.
    assert reports[0]["rng_sha256"] != reports[1]["rng_sha256"]
    assert reports[0]["buffers"]["regularizer_state.path_length.mean"] > 0
    assert reports[0]["buffers"] == reports[1]["buffers"]


def test_a_nonfinite_loss_on_rank_1_only_is_skipped_by_both_ranks(tmp_path: Path) -> None:
    """On R3GAN's networks (no find_unused_parameters) with adaptive augmentation, whose p
    is summed over ranks and restored on a skip: every rank ends alike."""
    reports = run_ddp(
        tmp_path / "run",
        "train.iterations=10",
        "skip.inject_nonfinite_at=[3,7]",
        "skip.inject_rank=1",
        "model.generator.widths=8",
        "model.generator.cardinality=2",
        "callbacks=default",
        "augment=adaptive",
        "augment.interval=2",
        "augment.speed_images=500",
        "augment.initial=0.5",  # so that it can move either way
        "data.batch_size=16",
        "regularizers=[path_length]",  # its running mean is restored on the skip, alike
        "regularizers.path_length.interval=2",
        experiment="r3gan",
    )
    for report in reports:
        assert report["iteration"] == 10
        assert report["skipped_batches"] == [3, 8]
        assert report["skip_counts"] == {"nonfinite_loss": 2}
        assert report["weights_finite"]
    assert reports[0]["weights_sha256"] == reports[1]["weights_sha256"]
    assert reports[0]["augment_p"] == reports[1]["augment_p"] != 0.5  # it moved, alike
    assert reports[0]["buffers"] == reports[1]["buffers"]


def test_a_predicate_reading_d_loss_skips_on_both_ranks_when_one_asks(tmp_path: Path) -> None:
    predicate = (
        "skip.predicate={_target_: ddp_probe.DiscriminatorLossAbove, "
        "threshold: 10, rank: 1, at: [4]}"
    )
    reports = run_ddp(
        tmp_path / "run", "train.iterations=8", predicate, "skip.predicate_reason=d_loss_high"
    )
    for report in reports:
        assert report["iteration"] == 8
        assert report["skipped_batches"] == [4]  # rank 1 asked; rank 0 skipped with it
        assert report["skip_counts"] == {"d_loss_high": 1}
    assert reports[0]["weights_sha256"] == reports[1]["weights_sha256"]


@pytest.mark.slow
def test_two_ranks_resuming_a_one_process_checkpoint_draw_their_own_latents(
    tmp_path: Path,
) -> None:
    """The checkpoint holds one random stream for two ranks: each rank still gets its own."""
    single = tmp_path / "single"
    command = [
        sys.executable, "-m", "gan_template", "experiment=ring", "trainer=cpu", "train.iterations=4",
        "trainer.enable_progress_bar=false", "callbacks=default", f"hydra.run.dir={single}",
    ]  # fmt: skip
    completed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert completed.returncode == 0, completed.stderr[-3000:]
    checkpoint = single / "checkpoints" / "last.ckpt"
    reports = run_ddp(
        tmp_path / "run", "train.iterations=8", f"ckpt_path={checkpoint}", "callbacks=default"
    )
    assert [r["iteration"] for r in reports] == [8, 8]
    assert reports[0]["rng_sha256"] != reports[1]["rng_sha256"]
    assert reports[0]["weights_sha256"] == reports[1]["weights_sha256"]


@pytest.mark.slow
def test_the_evaluation_during_training_is_sharded_over_ranks_and_gives_one_process_figures(
    tmp_path: Path,
) -> None:
    """2 ranks split the samples (3 batches: ranks 0, 1, 0) and gather them: evaluate's figures."""
    from gan_template.evaluate import main as evaluate

    run_dir = tmp_path / "run"
    run_ddp(
        run_dir,
        "train.iterations=4",
        "data.batch_size=16",
        "callbacks.image_eval.every_n_iterations=0",
        "callbacks.image_eval.num_samples=1100",
        "callbacks.image_eval.kid_subset_size=200",
        "callbacks.sample_grid.every_n_iterations=0",
        "callbacks.sample_grid.interpolation_rows=0",
        experiment="dcgan",
    )
    final = json.loads((run_dir / "final_metrics.json").read_text())
    single = evaluate(
        [
            str(run_dir / "checkpoints" / "last.ckpt"), "--n", "1100", "--seed", "2024",
            "--reference-samples", "1000", "--kid-subset-size", "200",
            "--out", str(tmp_path / "single.json"),
        ]
    )  # fmt: skip
    for name, value in single["metrics"].items():
        assert final[f"image/{name}"] == pytest.approx(value, rel=1e-5), name

"""logger=wandb and logger=mlflow with the real packages, offline: what was logged is read back.

Each test trains the ring recipe for a few iterations, resumes it with
``ckpt_path=last`` into the same run directory, and checks that the tracker
holds one run with the metrics at ``step = iteration`` (the same steps as
``metrics.csv``), the resolved config, and the toy plots.
"""

from __future__ import annotations

import csv
import json
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import run

from gan_template.harness.loggers import TRACKER_RUNS

wandb = pytest.importorskip("wandb")
mlflow = pytest.importorskip("mlflow")

RECIPE = [
    "experiment=ring",
    "callbacks.toy_eval.every_n_iterations=10",
    "callbacks.toy_eval.num_samples=500",
    "callbacks.checkpoint.every_n_iterations=10",
    "trainer.log_every_n_steps=5",
]


def csv_steps(run_dir: Path, metric: str) -> list[int]:
    with open(run_dir / "metrics.csv", newline="") as file:
        return [int(row["step"]) for row in csv.DictReader(file) if row.get(metric)]


def train_and_resume(make_config, run_dir: Path, *logger: str) -> None:  # type: ignore[no-untyped-def]
    run(make_config(*RECIPE, *logger, "train.iterations=20", run_dir=run_dir))
    run(make_config(*RECIPE, *logger, "train.iterations=30", "ckpt_path=last", run_dir=run_dir))


# --- W&B ---------------------------------------------------------------------


def wandb_records(path: Path) -> Iterator[object]:
    """The records of an offline ``run-<id>.wandb`` file (a LevelDB-style log of protobufs).

    W&B has no public reader for offline runs (``wandb sync`` uploads them), so
    the test reads the documented log format: a 7-byte file header, then
    32 KiB blocks of records with a 7-byte header (checksum, length, type:
    1 full, 2 first, 3 middle, 4 last).
    """
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    position, block, pending = 7, 32768, b""
    while position + 7 <= len(data):
        left_in_block = block - position % block
        if left_in_block < 7:
            position += left_in_block  # a block's tail too short for a header is padding
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 2):
            pending = chunk
        elif kind in (3, 4):
            pending += chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def wandb_history(run_file: Path) -> list[dict[str, object]]:
    rows = []
    for record in wandb_records(run_file):
        if record.WhichOneof("record_type") == "history":  # type: ignore[attr-defined]
            rows.append(
                {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in record.history.item  # type: ignore[attr-defined]
                }
            )
    return rows


def wandb_config(run_file: Path) -> dict[str, object]:
    config = {}
    for record in wandb_records(run_file):
        if record.WhichOneof("record_type") == "config":  # type: ignore[attr-defined]
            for item in record.config.update:  # type: ignore[attr-defined]
                config[item.key] = json.loads(item.value_json)
    return config


def test_wandb_offline_logs_iterations_config_and_pictures_and_resume_continues_the_run(
    make_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "run"
    train_and_resume(make_config, run_dir, "logger=wandb")

    run_id = json.loads((run_dir / TRACKER_RUNS).read_text())["wandb"]
    run_files = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    # One W&B run, written in two sittings (W&B keeps one folder per process).
    assert [f.name for f in run_files] == [f"run-{run_id}.wandb"] * 2

    history = [row for f in run_files for row in wandb_history(f)]
    logged = [row["iteration"] for row in history if "train/d_loss" in row]
    assert logged == csv_steps(run_dir, "train/d_loss") == [5, 10, 15, 20, 25, 30]
    toy = [row["iteration"] for row in history if "toy/modes_captured" in row]
    assert toy == [10, 20, 30]
    pictures = [row["iteration"] for row in history if "samples/filenames" in row]
    assert pictures == [10, 20, 30]
    for run_file in run_files:
        assert list((run_file.parent / "files" / "media" / "images").glob("samples_*.png"))

    config = wandb_config(run_files[0])["run_config"]
    assert config["train"]["iterations"] == 20  # type: ignore[index]
    assert config["loss"]["_target_"] == "gan_template.losses.NonSaturating"  # type: ignore[index]


# --- MLflow ------------------------------------------------------------------


def test_mlflow_logs_iterations_config_and_pictures_and_resume_continues_the_run(
    make_config, tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dir = tmp_path / "run"
    train_and_resume(
        make_config,
        run_dir,
        "logger=mlflow",
        f"logger.mlflow.tracking_uri={store}",
        f"logger.mlflow.artifact_location={tmp_path / 'artifacts'}",
    )

    client = mlflow.MlflowClient(store)
    (experiment,) = [e for e in client.search_experiments() if e.name == "gan_template"]
    (found,) = client.search_runs([experiment.experiment_id])  # one run, resumed
    run_id = found.info.run_id
    assert json.loads((run_dir / TRACKER_RUNS).read_text())["mlflow"] == run_id
    assert found.info.status == "FINISHED"

    steps = [m.step for m in client.get_metric_history(run_id, "train/d_loss")]
    assert sorted(steps) == csv_steps(run_dir, "train/d_loss") == [5, 10, 15, 20, 25, 30]
    toy = sorted(m.step for m in client.get_metric_history(run_id, "toy/reverse_kl"))
    assert toy == [10, 20, 30]

    params = found.data.params
    assert params["run_config/train/iterations"] == "20"  # parameters are set once
    assert params["run_config/loss/_target_"] == "gan_template.losses.NonSaturating"

    pictures = sorted(Path(a.path).name for a in client.list_artifacts(run_id, "samples"))
    assert pictures == [f"toy_iter{i:07d}.png" for i in (10, 20, 30)]


# --- Trackers that cannot work: refused before anything trains ----------------


def run_cli(tmp_path: Path, *overrides: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gan_template", "experiment=ring", "train.iterations=5",
         "trainer.enable_progress_bar=false", *overrides, f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


def test_wandb_without_an_api_key_says_how_to_log_in_or_go_offline(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["HOME"] = str(tmp_path)  # no ~/.netrc
    env["NETRC"] = str(tmp_path / "no-netrc")
    completed = run_cli(tmp_path, "logger=wandb", env=env)
    assert completed.returncode == 2, completed.stderr[-3000:]
    assert "no W&B API key is configured" in completed.stderr
    assert "wandb login" in completed.stderr and "WANDB_MODE=offline" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_an_unreachable_mlflow_server_is_named_at_once(tmp_path: Path) -> None:
    """Within run_cli's timeout, not after MLflow's retries."""
    completed = run_cli(
        tmp_path,
        "logger=mlflow",
        "logger.mlflow.tracking_uri=http://127.0.0.1:9",
        env=dict(os.environ),
    )
    assert completed.returncode == 2, completed.stderr[-3000:]
    assert "logger.mlflow.tracking_uri=http://127.0.0.1:9: the tracking server does not answer" in (
        completed.stderr
    )
    assert "Traceback" not in completed.stderr and "Retrying" not in completed.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()

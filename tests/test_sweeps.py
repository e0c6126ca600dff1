"""Multiruns from the command line: one folder per sweep, a summary, DDP per job, Optuna."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO_ROOT

from gan_template.callbacks.periodic import FINAL_METRICS

RING = [
    "experiment=ring",
    "trainer=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "callbacks.toy_eval.num_samples=500",
]


def multirun(cwd: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "gan_template", "-m", *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def only_sweep_folder(cwd: Path) -> Path:
    (day,) = (cwd / "multirun").iterdir()
    (sweep,) = day.iterdir()  # one sweep, one folder
    return sweep


def read_summary(sweep: Path) -> list[dict[str, str]]:
    with open(sweep / "summary.csv", newline="") as file:
        return list(csv.DictReader(file))


def test_seed_sweep_gives_one_folder_per_job_and_a_summary_of_their_final_metrics(
    tmp_path: Path,
) -> None:
    done = multirun(tmp_path, *RING, "train.iterations=30", "seed=0,1,2")
    sweep = only_sweep_folder(tmp_path)
    rows = read_summary(sweep)
    assert [row["job"] for row in rows] == ["0", "1", "2"]
    assert [row["seed"] for row in rows] == ["0", "1", "2"]
    for row in rows:
        job = sweep / row["job"]
        final = json.loads((job / FINAL_METRICS).read_text())
        assert final["iteration"] == 30
        assert row["status"] == "done"
        for name in ("modes_captured", "high_quality", "reverse_kl"):
            assert float(row[f"toy/{name}"]) == pytest.approx(final[f"toy/{name}"])
        assert [p.name for p in job.glob("*.json")] == [FINAL_METRICS]  # one result file
    assert "Sweep summary" in done.stderr + done.stdout


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("train.n_critic", "train.n_critic=0: must be >= 1"),  # refused by validate()
        ("data.scale", "data.scale=0 must be > 0"),  # refused by the data module, at run time
    ],
)
def test_a_refused_job_stops_the_sweep_with_a_summary_of_every_job_so_far(
    tmp_path: Path, key: str, message: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gan_template", "-m", *RING, "train.iterations=5", f"{key}=1,0"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    assert message in done.stderr and "Traceback" not in done.stderr
    rows = read_summary(only_sweep_folder(tmp_path))
    assert [(row[key], row["status"]) for row in rows] == [
        ("1", "done"),
        ("0", "failed or unfinished"),
    ]


@pytest.mark.ddp
@pytest.mark.slow  # 15 s: a multirun of 2-process jobs (the default suite's time budget)
def test_ddp_multirun_keeps_every_rank_in_its_jobs_folder(tmp_path: Path) -> None:
    # Lightning starts rank 1 by re-running the command line; with -m that was a
    # second sweep in a second folder. Here each job starts its own rank 1.
    multirun(tmp_path, *RING, "trainer=ddp_cpu", "train.iterations=10", "seed=0,1")
    sweep = only_sweep_folder(tmp_path)
    for row in read_summary(sweep):
        job = sweep / row["job"]
        assert row["status"] == "done"
        assert (job / "train_ddp_process_1.log").is_file()  # rank 1 ran this job, here
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        assert f"seed={row['job']}" in overrides


@pytest.mark.slow  # an Optuna multirun of several trials: about 12 s
def test_optuna_search_minimizes_the_final_metric_over_its_trials(tmp_path: Path) -> None:
    multirun(
        tmp_path,
        *RING,
        "hparams_search=toy_optuna",
        "train.iterations=300",
        "hydra.sweeper.n_trials=3",
    )
    sweep = only_sweep_folder(tmp_path)
    rows = read_summary(sweep)
    assert len(rows) == 3
    # Each trial ran with the values Optuna sampled, from the search space.
    for row in rows:
        assert 5e-5 <= float(row["optim.generator.lr"]) <= 2e-3
        assert row["train.n_critic"] in ("1", "2", "5")
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    kls = [float(row["toy/reverse_kl"]) for row in rows]
    assert best["best_value"] == pytest.approx(min(kls))


#: A search whose trials are short; workers share the storage and the sweep folder.
SEARCH = [*RING, "hparams_search=toy_optuna", "callbacks.toy_eval.every_n_iterations=10"]


def start_worker(tmp_path: Path, sweep: Path, storage: str, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "gan_template", "-m", *SEARCH, f"hydra.sweep.dir={sweep}",
         f"hydra.sweeper.storage={storage}", *overrides],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip


def study_trials(storage: str) -> list:
    import optuna
    from optuna.storages.journal import JournalFileBackend

    opened: Any = storage
    if storage.startswith("journal://"):  # the sweeper's spelling of Optuna's journal file
        opened = optuna.storages.JournalStorage(
            JournalFileBackend(storage.removeprefix("journal://"))
        )
    return optuna.load_study(study_name="toy", storage=opened).get_trials(deepcopy=False)


@pytest.mark.slow  # two concurrent sweep workers per storage: about 20 s in all
@pytest.mark.parametrize(
    "storage",
    ["sqlite:///{tmp}/optuna.db", "journal:///{tmp}/optuna.log"],
    ids=["sqlite", "journal"],
)
def test_two_workers_fill_one_study_without_duplicate_or_lost_trials(
    tmp_path: Path, storage: str
) -> None:
    sweep, storage = tmp_path / "sweep", storage.format(tmp=tmp_path)
    workers = [
        start_worker(tmp_path, sweep, storage, "hydra.sweeper.n_trials=6", "train.iterations=20")
        for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=600)[0] for worker in workers]
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output[-3000:]
    trials = study_trials(storage)
    assert sorted(t.number for t in trials) == list(range(6))  # six, none twice, none lost
    assert {t.state.name for t in trials} == {"COMPLETE"}
    assert all(
        any(f"Trial {t.number}" in o or f"/{t.number}/" in o for o in outputs) for t in trials
    )
    rows = read_summary(sweep)
    assert sorted(int(row["job"]) for row in rows) == list(range(6))
    assert {row["status"] for row in rows} == {"done"}
    ran = [sum(f"{sweep}/{n}/" in output for n in range(6)) for output in outputs]
    assert all(ran), "both workers ran trials"  # at the same time: each trial is seconds long


@pytest.mark.slow  # a restart after kills: one of the contract studies
def test_a_study_whose_workers_were_all_killed_is_completed_by_a_restart(tmp_path: Path) -> None:
    sweep, storage = tmp_path / "sweep", f"sqlite:///{tmp_path / 'optuna.db'}"
    settings = ["hydra.sweeper.n_trials=6", "train.iterations=100000", "hydra.sweeper.heartbeat_s=0.5",
                "hydra.sweeper.grace_s=2"]  # fmt: skip
    workers = [start_worker(tmp_path, sweep, storage, *settings) for _ in range(2)]
    try:
        deadline = time.monotonic() + 120
        while not list(sweep.glob("*/metrics.csv")):  # trials are under way
            assert time.monotonic() < deadline and all(w.poll() is None for w in workers)
            time.sleep(0.2)
    finally:
        for worker in workers:
            worker.kill()  # SIGKILL: no chance to tell the study anything
            worker.wait()
    assert {t.state.name for t in study_trials(storage)} == {"RUNNING"}
    restart = start_worker(
        tmp_path, sweep, storage, *settings[:1], "train.iterations=20", *settings[2:]
    )
    output = restart.communicate(timeout=600)[0]
    assert restart.returncode == 0, output[-3000:]
    states = [t.state.name for t in study_trials(storage)]
    assert states.count("COMPLETE") == 6 and set(states) == {"COMPLETE", "FAIL"}, states
    assert "no heartbeat for 2 s, its worker is gone; failed" in output


def test_a_trial_the_pruner_drops_stops_early_and_is_recorded_as_pruned(tmp_path: Path) -> None:
    sweep, storage = tmp_path / "sweep", f"sqlite:///{tmp_path / 'optuna.db'}"
    worker = start_worker(
        tmp_path, sweep, storage, "hydra.sweeper.n_trials=1", "train.iterations=200",
        # A pruner that drops any trial at its first report: toy/reverse_kl is >= 0.
        "~hydra.sweeper.pruner", "+hydra.sweeper.pruner={_target_: optuna.pruners.ThresholdPruner, upper: -1.0}",
    )  # fmt: skip
    output = worker.communicate(timeout=600)[0]
    assert worker.returncode == 0, output[-3000:]
    (trial,) = study_trials(storage)
    assert trial.state.name == "PRUNED"
    assert list(trial.intermediate_values) == [10]  # reported at the first evaluation, then stopped
    (row,) = read_summary(sweep)
    assert row["status"] == "pruned"
    with open(sweep / "0" / "metrics.csv") as file:
        steps = {int(r["step"]) for r in csv.DictReader(file) if r.get("step")}
    assert max(steps) <= 10  # it never trained past the iteration it was pruned at

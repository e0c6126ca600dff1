"""Shared fixtures: composing the real config tree and running real Trainers on it."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from gan_template.__main__ import CONFIG_DIR

REPO_ROOT = CONFIG_DIR.parent

# Small, fast runs: CPU, no progress bar redraws, logs every step.
FAST = [
    "trainer=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=1",
]


def compose_config(overrides: Sequence[str], run_dir: Path) -> DictConfig:
    """Compose conf/ as ``python -m gan_template`` would, with the run directory pinned."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=[*overrides, f"paths.run_dir={run_dir}"])


class ConfigMaker:
    """``make_config(*overrides)``: a composed config whose run directory is ``tmp_path/run``.

    A test that starts several fresh runs gives each its own directory
    (``run_dir=make_config.new_run_dir()``): a fresh run into a directory that
    already holds one is refused (``train.resolve_checkpoint``).
    """

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.runs = 0

    def __call__(
        self, *overrides: str, fast: bool = True, run_dir: Path | None = None
    ) -> DictConfig:
        return compose_config(
            [*(FAST if fast else []), *overrides], run_dir or self.tmp_path / "run"
        )

    def new_run_dir(self) -> Path:
        self.runs += 1
        return self.tmp_path / f"run-{self.runs}"


@pytest.fixture
def make_config(tmp_path: Path) -> ConfigMaker:
    return ConfigMaker(tmp_path)


@pytest.fixture(autouse=True)
def _quiet_and_single_threaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONWARNINGS", "ignore")
    warnings.filterwarnings("ignore", category=UserWarning, module="lightning")
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One short run of the default recipe (DCGAN on the digits), shared by the session.

    For the tests that need *a* trained run (its checkpoint, sample grids, latent
    walks, evaluation networks), not a good one: those read it and must not
    change it. The recipe's quality bar is a ``quality`` study (test_image_quality.py).
    """
    from helpers import run

    run_dir = tmp_path_factory.mktemp("digits_run")
    overrides = [
        *FAST,
        "train.iterations=60",
        "trainer.log_every_n_steps=20",
        "callbacks.sample_grid.every_n_iterations=30",
        "callbacks.image_eval.every_n_iterations=0",  # once, at the end
    ]
    cfg = compose_config(overrides, run_dir)
    return run(cfg) | {"cfg": cfg}

"""The worked examples of docs/extending.md work: applied to a copy of the project, they lint, pass
their tests and train."""

from __future__ import annotations

import csv
import os
import re
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import REPO_ROOT

DOC = REPO_ROOT / "docs" / "extending.md"
BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.DOTALL | re.MULTILINE)
FAST = [
    "train.iterations=30",
    "trainer=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=10",
]


def doc_blocks() -> tuple[dict[str, tuple[str, str]], list[str]]:
    """``{path: (mode, code)}`` for the code blocks with ``file=``/``append=``, and the commands."""
    files: dict[str, tuple[str, str]] = {}
    commands: list[str] = []
    for language, info, body in BLOCK.findall(DOC.read_text()):
        target = re.search(r"\b(file|append)=(\S+)", info)
        if target:
            assert target.group(2) not in files, f"{target.group(2)} appears twice in {DOC.name}"
            files[target.group(2)] = (target.group(1), body)
        elif language == "bash":
            commands += [line for line in body.splitlines() if line.startswith("python ")]
    return files, commands


def test_the_page_has_the_five_examples() -> None:
    files, commands = doc_blocks()
    assert {"gan_template/models/residual_mlp.py", "my_project/losses.py", "conf/penalty/r1_annealed.yaml",
            "gan_template/data/moons.py", "gan_template/metrics/sliced_wasserstein.py",
            "my_project/bigan.py", "conf/experiment/bigan.yaml"} <= files.keys()  # fmt: skip
    assert sum(c.startswith("python -m gan_template ") for c in commands) == 6
    assert sum(c.startswith("python -m pytest") for c in commands) == 3


@pytest.fixture(scope="module")
def project_with_examples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("docs") / "project"
    ignore = shutil.ignore_patterns("__pycache__")
    for folder in ("gan_template", "conf", "tests"):
        shutil.copytree(REPO_ROOT / folder, root / folder, ignore=ignore)
    shutil.copy(REPO_ROOT / "pyproject.toml", root)
    files, _ = doc_blocks()
    for relative, (mode, code) in files.items():
        path = root / relative
        assert (mode == "append") == path.exists(), (
            f"{relative}: `{mode}=` but exists={path.exists()}"
        )
        path.parent.mkdir(parents=True, exist_ok=True)  # a package of the user's own
        # Appended code goes after two blank lines, as a new top-level definition.
        path.write_text(
            path.read_text().rstrip("\n") + "\n\n\n" + code if mode == "append" else code
        )
    return root


def test_the_examples_are_lint_clean(project_with_examples: Path) -> None:
    python_files = [path for path in doc_blocks()[0] if path.endswith(".py")]
    for command in (["check"], ["format", "--check"]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *command, *python_files],
            cwd=project_with_examples, capture_output=True, text=True,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr


def test_every_command_of_the_page_runs(project_with_examples: Path) -> None:
    _, commands = doc_blocks()
    env = {**os.environ, "PYTHONPATH": str(project_with_examples)}
    run_dirs = [project_with_examples / "runs" / str(index) for index in range(len(commands))]

    def run_command(command: str, run_dir: Path) -> subprocess.CompletedProcess:
        argv = [sys.executable, *shlex.split(command)[1:]]
        if command.startswith("python -m gan_template"):
            argv += [*FAST, f"hydra.run.dir={run_dir}"]
        return subprocess.run(
            argv, cwd=project_with_examples, env=env, capture_output=True, text=True, timeout=600
        )

    # Two at a time: the commands are independent, and most of each is Python's start-up.
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(run_command, commands, run_dirs))
    for command, run_dir, result in zip(commands, run_dirs, results, strict=True):
        assert result.returncode == 0, (
            f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        )
        if "pytest" in command:
            assert (
                " passed" in result.stdout
                and "deselected" not in result.stdout.split(" passed")[0][-5:]
            )
        if "penalty=r1_annealed" in command:
            with open(run_dir / "metrics.csv") as file:
                weights = [float(row["train/hp/penalty.weight"]) for row in csv.DictReader(file)
                           if row.get("train/hp/penalty.weight")]  # fmt: skip
            assert weights[0] > weights[-1] and weights == sorted(weights, reverse=True), weights
        if "callbacks=sliced_wasserstein" in command:
            with open(run_dir / "metrics.csv") as file:
                values = [row["eval/sliced_wasserstein"] for row in csv.DictReader(file)]
            assert [v for v in values if v], "eval/sliced_wasserstein was never logged"


@pytest.mark.ddp
@pytest.mark.slow  # four runs of the example, one of them 2-process DDP: about 23 s
def test_the_bigan_example_gets_the_harness_guarantees(project_with_examples: Path) -> None:
    """A user's algorithm (a third network, a training_step of its own): under 2-process DDP
    the ranks end identical and a skip injected on rank 1 skips both; N iterations, then a
    resume to 2N, equal 2N straight, bit for bit."""
    import json

    import torch

    root = project_with_examples / "bigan_runs"
    env = {
        **os.environ,
        "PYTHONPATH": f"{project_with_examples}{os.pathsep}{project_with_examples / 'tests'}",
    }
    common = ["experiment=bigan", "callbacks=default", "trainer.enable_progress_bar=false",
              "trainer.log_every_n_steps=1", "data.limit=256", "data.batch_size=32"]  # fmt: skip
    resume = [
        *common,
        "trainer=cpu",
        "trainer.deterministic=true",
        "skip.inject_nonfinite_at=[2,9]",
    ]
    runs = {
        "ddp": [
            *common,
            "trainer=ddp_cpu",
            "train.iterations=6",
            "skip.inject_nonfinite_at=[3]",
            "skip.inject_rank=1",
            "+callbacks.rank_report._target_=ddp_probe.RankReport",
            "extra_target_prefixes=[my_project.,ddp_probe.]",
        ],
        "straight": [*resume, "train.iterations=12"],
        "first": [*resume, "train.iterations=6"],
    }

    def launch(name: str, *extra: str) -> subprocess.CompletedProcess:
        overrides = runs[name.removesuffix("-resumed")]
        argv = [
            sys.executable,
            "-m",
            "gan_template",
            *overrides,
            *extra,
            f"hydra.run.dir={root / name}",
        ]
        return subprocess.run(argv, cwd=project_with_examples, env=env, capture_output=True,
                              text=True, timeout=600)  # fmt: skip

    def first_then_resumed() -> dict[str, subprocess.CompletedProcess]:
        first = launch("first")
        checkpoint = root / "first" / "checkpoints" / "last.ckpt"
        resumed = launch("first-resumed", "train.iterations=12", f"ckpt_path={checkpoint}")
        return {"first": first, "first-resumed": resumed}

    # Two lines at a time: DDP then the straight run, beside the first run then its resume.
    with ThreadPoolExecutor(max_workers=2) as pool:
        resuming = pool.submit(first_then_resumed)
        results = {name: launch(name) for name in ("ddp", "straight")} | resuming.result()
    for name, result in results.items():
        assert result.returncode == 0, f"{name}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"

    reports = [json.loads((root / "ddp" / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    for report in reports:
        assert report["iteration"] == 6 and report["skipped_batches"] == [3]
    assert reports[0]["weights_sha256"] == reports[1]["weights_sha256"]

    def state(name: str) -> dict:
        path = root / name / "checkpoints" / "last.ckpt"
        return torch.load(path, map_location="cpu", weights_only=False)

    straight, resumed = state("straight"), state("first-resumed")
    assert resumed["gan_template"]["iteration"] == 12
    assert resumed["gan_template"]["skip"]["counts"] == {"nonfinite_loss": 2}
    assert any(key.startswith("encoder.") for key in straight["state_dict"])
    assert straight["state_dict"].keys() == resumed["state_dict"].keys()
    for key, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key

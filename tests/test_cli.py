"""The commands a new user types, run as subprocesses from outside the repository."""

from __future__ import annotations

import csv
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import run


def cli(cwd: Path, *args: str, module: str = "gan_template") -> subprocess.CompletedProcess:
    completed = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed


def test_a_run_writes_everything_into_its_run_directory_and_resumes(tmp_path: Path) -> None:
    first = tmp_path / "first"
    fast = ["trainer.log_every_n_steps=10", "callbacks.toy_eval.every_n_iterations=20"]
    completed = cli(
        tmp_path, "experiment=ring", "train.iterations=40", *fast, f"hydra.run.dir={first}"
    )
    assert f"Run directory: {first}" in completed.stdout
    assert "litlogger" not in completed.stdout + completed.stderr  # Lightning's advert, dropped
    for expected in [
        ".hydra/config.yaml",  # the resolved config of the run
        "metrics.csv",
        "checkpoints/last.ckpt",
        "samples/toy_iter0000020.png",
        "samples/toy_iter0000040.png",
        "final_metrics.json",
    ]:
        assert (first / expected).is_file(), expected
    assert json.loads((first / "final_metrics.json").read_text())["iteration"] == 40

    # Resume: the iteration count, and so the log steps, continue from the checkpoint.
    second = tmp_path / "second"
    cli(
        tmp_path,
        "experiment=ring",
        f"ckpt_path={first}/checkpoints/last.ckpt",
        "train.iterations=60",
        *fast,
        f"hydra.run.dir={second}",
    )
    with open(second / "metrics.csv") as f:
        steps = [int(row["step"]) for row in csv.DictReader(f) if row.get("train/g_loss")]
    assert steps == [50, 60]
    assert json.loads((second / "final_metrics.json").read_text())["iteration"] == 60

    # Sampling from the checkpoint.
    out = tmp_path / "samples.pt"
    completed = cli(
        tmp_path,
        f"{second}/checkpoints/last.ckpt",
        "--n=300",
        f"--out={out}",
        module="gan_template.sample",
    )
    samples = torch.load(out)
    assert samples.shape == (300, 2) and samples.dtype == torch.float32
    assert torch.isfinite(samples).all()


def test_ckpt_path_last_resumes_the_run_in_the_same_directory(
    make_config, caplog: pytest.LogCaptureFixture
) -> None:
    """The same command again (as a requeued job runs it), in this process: it continues."""
    common = ["experiment=ring", "callbacks.toy_eval.every_n_iterations=0"]
    run_dir = make_config.tmp_path / "run"
    run(make_config(*common, "train.iterations=20", "trainer.log_every_n_steps=10"))
    run(
        make_config(
            *common, "train.iterations=30", "trainer.log_every_n_steps=10", "ckpt_path=last"
        )
    )
    assert json.loads((run_dir / "final_metrics.json").read_text())["iteration"] == 30
    with open(run_dir / "metrics.csv") as f:  # the first segment's logs are kept, not overwritten
        steps = [int(row["step"]) for row in csv.DictReader(f) if row.get("train/g_loss")]
    assert steps == [10, 20, 30]
    # A shorter run length: nothing to train, and the final evaluation of iteration 30
    # is not run (and logged) again: its result comes back from the checkpoint.
    final = json.loads((run_dir / "final_metrics.json").read_text())
    with caplog.at_level(logging.WARNING, logger="gan_template.harness.train"):
        run(make_config(*common, "train.iterations=25", "ckpt_path=last"))
    assert "is at iteration 30, train.iterations=25: nothing to train" in caplog.text
    assert json.loads((run_dir / "final_metrics.json").read_text()) == final
    with open(run_dir / "metrics.csv") as f:
        evaluated = [int(row["step"]) for row in csv.DictReader(f) if row.get("toy/modes_captured")]
    assert evaluated == [20, 30]


SAMPLE_ERRORS = [
    # (arguments after the checkpoint, message fragment); every one exits with status 2
    (["--n", "abc"], "argument --n: invalid integer >= 1 value: 'abc'"),
    (["--n", "2.5"], "argument --n: invalid integer >= 1 value: '2.5'"),
    (["--n", "0"], "argument --n: invalid integer >= 1 value: '0'"),
    (["--seed", "x"], "argument --seed: invalid int value: 'x'"),
    (["--out", "{tmp}"], "is a folder; give a file name such as"),
    (["--out", "{file}/samples.pt"], "test_cli.py is a file, not a folder"),
    (["--device", "tpu9"], "--device tpu9 cannot be used here"),
    (["--ema", "maybe"], "unrecognized arguments: --ema maybe"),
    (
        ["--out", "s.png"],
        "--out s.png names a picture; --out is the tensor file",
    ),  # not overwritten
]


@pytest.mark.parametrize(
    ("arguments", "message"), SAMPLE_ERRORS, ids=[" ".join(a) for a, _ in SAMPLE_ERRORS]
)
def test_sampling_cli_refuses_bad_arguments_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    from gan_template.sample import main

    with pytest.raises(SystemExit) as exited:
        main(
            ["some.ckpt"]
            + [a.replace("{tmp}", str(tmp_path)).replace("{file}", __file__) for a in arguments]
        )
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all"], ids=["empty", "junk"])
def test_sampling_from_a_file_that_is_not_a_checkpoint_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    from gan_template.sample import main

    path = tmp_path / "model.ckpt"
    path.write_bytes(content)
    with pytest.raises(SystemExit) as exited:
        main([str(path)])
    assert exited.value.code == 2
    assert f"{path} is damaged and cannot be loaded" in capsys.readouterr().err


def test_sampling_cli_help_exits_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    from gan_template.sample import main

    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    assert "--no-ema" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "code", "heavy"),
    [
        (["--help"], 0, {"torch", "lightning", "torchvision", "torchmetrics"}),
        (["--cfg", "job"], 0, {"torch", "lightning", "torchvision", "torchmetrics"}),
        (["trian.iterations=5"], 1, {"torch", "lightning", "torchvision", "torchmetrics"}),
        (["train.iterations=0"], 2, {"lightning", "torchvision", "torchmetrics"}),
    ],
    ids=["help", "cfg-job", "hydra-refuses", "validate-refuses"],
)
def test_the_command_line_imports_no_more_than_it_needs(
    tmp_path: Path, args: list[str], code: int, heavy: set[str]
) -> None:
    """``--help`` and a refused config answer in about a second, not Lightning's import time."""
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "gan_template", *args, f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert completed.returncode == code, completed.stderr[-3000:]
    imported = {
        line.rsplit("|", 1)[-1].strip()
        for line in completed.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "hydra" in imported  # the listing is real
    assert not heavy & imported, sorted(heavy & imported)

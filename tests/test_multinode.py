"""``trainer=ddp_multinode`` as the README launches it: two torchrun agents ("nodes") on loopback.

Each agent starts one CPU rank (gloo); both get the same ``hydra.run.dir``, as
on a shared filesystem. Two nodes train, a resume with ``ckpt_path=last``
continues on both. Not covered yet: a node that dies leaves the other waiting
in gloo's all-reduce until the process group's timeout (30 minutes by
default), and a group that ``torchrun --max-restarts`` restarts did not
connect again here (gloo: connection refused). Marked slow (about 2 minutes);
CI runs it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.slow, pytest.mark.ddp]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_nodes(run_dir: Path, port: int, *overrides: str) -> list[subprocess.Popen]:
    torchrun = Path(sys.executable).with_name("torchrun")

    def node(rank: int) -> subprocess.Popen:
        command = [
            str(torchrun), "--nnodes=2", "--nproc-per-node=1", f"--node-rank={rank}",
            "--master-addr=127.0.0.1", f"--master-port={port}",
            "-m", "gan_template", "trainer=ddp_multinode", "trainer.num_nodes=2",
            "trainer.accelerator=cpu", "trainer.devices=1", "experiment=ring",
            "trainer.enable_progress_bar=false", "callbacks.toy_eval.every_n_iterations=0",
            f"hydra.run.dir={run_dir}", *overrides,
        ]  # fmt: skip
        return subprocess.Popen(
            command,
            cwd=run_dir.parent,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # one process group per node: killing it kills the node
        )

    return [node(0), node(1)]


def finish(nodes: list[subprocess.Popen], timeout: float) -> list[tuple[int, str]]:
    results = []
    try:
        for node in nodes:
            output, _ = node.communicate(timeout=timeout)
            results.append((node.returncode, output))
    finally:
        for node in nodes:
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)
    return results


def test_two_nodes_train_and_resume_on_both(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    for length, extra in ((40, []), (60, ["ckpt_path=last"])):
        results = finish(
            start_nodes(run_dir, free_port(), f"train.iterations={length}", *extra), 300
        )
        for status, output in results:
            assert status == 0, output[-3000:]
        assert json.loads((run_dir / "final_metrics.json").read_text())["iteration"] == length
        checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
        assert checkpoint["gan_template"]["iteration"] == length
        assert len(checkpoint["gan_template"]["rng"]) == 2  # both ranks' random streams
    assert len(list(run_dir.glob("metrics.csv"))) == 1

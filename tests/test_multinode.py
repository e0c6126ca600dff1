"""``trainer=ddp_multinode`` as the README launches it: two torchrun agents ("nodes") on loopback.

Each agent starts one CPU rank (gloo); both get the same ``hydra.run.dir``, as
on a shared filesystem. Two nodes train, a resume with ``ckpt_path=last``
continues on both; when one node dies, the other stops in seconds with a
message, not a traceback or a hang; and ``torchrun --max-restarts`` restarts
a group that lost a rank, which resumes from ``last.ckpt`` by itself. Marked
slow (about 4 minutes); CI runs it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
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


def workers(agent: subprocess.Popen) -> list[int]:
    """The pids torchrun started: each worker has a session of its own, so killpg misses it."""
    listed = subprocess.run(["pgrep", "-P", str(agent.pid)], capture_output=True, text=True)
    return [int(pid) for pid in listed.stdout.split()]


@pytest.mark.parametrize(
    "failure",
    [signal.SIGKILL, signal.SIGSTOP],
    ids=["node-dies", "node-hangs"],  # a hung node closes no connection: the timeout ends it
)
def test_when_a_node_fails_the_other_stops_with_a_message(
    tmp_path: Path, failure: signal.Signals
) -> None:
    run_dir = tmp_path / "run"
    nodes = start_nodes(
        run_dir,
        free_port(),
        "train.iterations=100000",
        "callbacks.checkpoint.every_n_iterations=20",
        "trainer.strategy.timeout_s=15",
    )
    try:
        deadline = time.monotonic() + 180
        while not (run_dir / "checkpoints" / "last.ckpt").is_file():
            assert time.monotonic() < deadline and nodes[0].poll() is None, "training never started"
            time.sleep(0.5)
        for pid in workers(nodes[1]):
            os.kill(pid, failure)
        if failure == signal.SIGKILL:  # the whole node goes: its worker, then its agent
            os.killpg(nodes[1].pid, signal.SIGKILL)
        failed = time.monotonic()
        output, _ = nodes[0].communicate(timeout=180)
        assert time.monotonic() - failed < 15 + 60
    finally:
        for node in nodes:
            if node.poll() is None:
                for pid in workers(node):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                os.killpg(node.pid, signal.SIGKILL)
    assert nodes[0].returncode != 0
    assert "gan_template: error: rank 0 lost contact with another rank" in output, output[-3000:]
    assert "ckpt_path=last" in output
    assert "RuntimeError: [" not in output  # gloo's error is in the message, not a traceback
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["gan_template"]["iteration"] >= 20


def local_rank(pid: int) -> int:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return int(next(v for v in environ if v.startswith(b"LOCAL_RANK=")).split(b"=")[1])


@pytest.mark.parametrize("killed", [0, 1], ids=["rank0-killed", "rank1-killed"])
def test_torchrun_restarts_the_group_and_it_resumes_from_the_last_checkpoint(
    tmp_path: Path, killed: int
) -> None:
    """The README's ``--max-restarts`` command: kill one rank, the group resumes and finishes.

    Before ``gan_template.harness.distributed.elastic_store`` the restarted rank 0
    read the dead rank's address from the first attempt (connection refused).
    """
    run_dir = tmp_path / "run"
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [
        str(torchrun), "--nnodes=1", "--nproc-per-node=2", "--max-restarts=1",
        "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{free_port()}",
        "-m", "gan_template", "trainer=ddp_multinode", "trainer.num_nodes=1",
        "trainer.accelerator=cpu", "trainer.devices=2", "experiment=ring",
        "trainer.enable_progress_bar=false", "callbacks.toy_eval.every_n_iterations=0",
        "callbacks.checkpoint.every_n_iterations=20", "train.iterations=240", "ckpt_path=auto",
        f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    agent = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not (run_dir / "checkpoints" / "last.ckpt").is_file():
            assert time.monotonic() < deadline and agent.poll() is None, "training never started"
            time.sleep(0.2)
        first = {local_rank(pid): pid for pid in workers(agent)}
        assert sorted(first) == [0, 1]
        os.kill(first[killed], signal.SIGKILL)
        output, _ = agent.communicate(timeout=300)
    finally:
        if agent.poll() is None:
            for pid in workers(agent):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            os.killpg(agent.pid, signal.SIGKILL)
    assert agent.returncode == 0, output[-4000:]
    assert "Restored all states from the checkpoint" in output, output[-4000:]
    assert "Connection refused" not in output
    assert json.loads((run_dir / "final_metrics.json").read_text())["iteration"] == 240
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["gan_template"]["iteration"] == 240

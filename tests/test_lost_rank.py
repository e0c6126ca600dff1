"""Which errors mean "another rank is gone", and what the user is told then.

The end-to-end cases (a node killed, a node stopped) are in ``test_multinode.py`` (slow).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import torch.distributed as dist

from gan_template.harness.distributed import ddp_strategy, elastic_store, is_lost_rank, lost_rank

GLOO = "[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:561] "


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError(GLOO + "Connection closed by peer [127.0.0.1]:28570"),
        RuntimeError(GLOO + "Read error [127.0.0.1]:2998: Connection reset by peer"),
        RuntimeError(GLOO + "Timed out waiting 15000ms for recv operation to complete"),
        dist.DistBackendError("NCCL watchdog: collective timed out"),
    ],
)
def test_a_peer_gone_is_a_lost_rank(error: BaseException) -> None:
    assert is_lost_rank(error)


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError(
            GLOO + "Gloo all-reduce: tensors of different sizes"
        ),  # a bug: keep the traceback
        RuntimeError("mat1 and mat2 shapes cannot be multiplied"),
        ValueError("Connection closed by peer"),
    ],
)
def test_the_runs_own_errors_are_not(error: BaseException) -> None:
    assert not is_lost_rank(error)


def test_the_message_names_the_iteration_the_cause_and_how_to_resume() -> None:
    error = RuntimeError(GLOO + "Connection closed by peer [127.0.0.1]:28570\nmore")
    saved = str(lost_rank(error, rank=1, iteration=41, checkpoint="/runs/a/checkpoints/last.ckpt"))
    assert saved.startswith("rank 1 lost contact with another rank during iteration 42")
    assert "Connection closed by peer" in saved and "more" not in saved
    assert "/runs/a/checkpoints/last.ckpt, is intact" in saved and "ckpt_path=last" in saved
    assert "trainer.strategy.timeout_s" in saved
    unsaved = str(lost_rank(error, rank=0, iteration=3, checkpoint=None))
    assert "no checkpoint had been written yet" in unsaved


def test_the_strategy_takes_its_timeout_in_seconds() -> None:
    strategy = ddp_strategy(timeout_s=15)
    assert strategy._timeout.total_seconds() == 15  # what Lightning passes to init_process_group
    with pytest.raises(ValueError, match="timeout_s must be > 0"):
        ddp_strategy(timeout_s=0)


def agent_store(**environ: str) -> tuple[dist.TCPStore, dict[str, str]]:
    """A store like torchrun's agent hosts, and the environment its workers get for it."""
    agent = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    torchrun = {
        "TORCHELASTIC_USE_AGENT_STORE": "True",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(agent.port),
        "WORLD_SIZE": "2",
        "TORCHELASTIC_MAX_RESTARTS": "1",
        **environ,
    }
    return agent, torchrun


def test_each_torchrun_restart_sees_only_its_own_keys() -> None:
    """Under torchrun's shared store, a restarted group must not read the dead group's addresses."""
    _agent, torchrun = agent_store()  # held: the server lives as long as the object
    timeout = timedelta(seconds=5)
    first = elastic_store(timeout, {**torchrun, "TORCHELASTIC_RESTART_COUNT": "0"})
    restarted = elastic_store(timeout, {**torchrun, "TORCHELASTIC_RESTART_COUNT": "1"})
    assert first is not None and restarted is not None
    first.set("rank_1", "address of the dead rank 1")
    assert not restarted.check(["rank_1"])
    restarted.set("rank_1", "address of the new rank 1")
    assert first.get("rank_1") == b"address of the dead rank 1"
    assert restarted.get("rank_1") == b"address of the new rank 1"
    # Outside torchrun, or with its store not shared, Lightning's own init is used.
    assert elastic_store(timeout, {}) is None
    assert elastic_store(timeout, {**torchrun, "TORCHELASTIC_USE_AGENT_STORE": "False"}) is None


def test_several_nodes_with_restarts_are_told_to_unshare_the_store() -> None:
    _agent, torchrun = agent_store(GROUP_WORLD_SIZE="2")
    with pytest.warns(UserWarning, match="TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1"):
        elastic_store(timedelta(seconds=5), torchrun)


def test_under_torchrun_with_restarts_left_the_message_says_it_restarts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "1")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    error = RuntimeError(GLOO + "Connection closed by peer [127.0.0.1]:28570")
    assert "torchrun restarts the group" in str(lost_rank(error, 0, 5, "/r/last.ckpt"))
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")  # the last restart is spent
    assert "torchrun restarts the group" not in str(lost_rank(error, 0, 5, "/r/last.ckpt"))

"""Which errors mean "another rank is gone", and what the user is told then.

The end-to-end cases (a node killed, a node stopped) are in ``test_multinode.py`` (slow).
"""

from __future__ import annotations

import pytest
import torch.distributed as dist

from gan_template.distributed import ddp_strategy, is_lost_rank, lost_rank

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

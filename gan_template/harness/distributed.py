"""DDP for GANs without ``find_unused_parameters=True``.

Lightning's DDP wraps the whole module, so the reducer expects a gradient for
every parameter in every backward; a GAN's D update gives G none (Lightning
#20328, #20866). Instead of a graph walk per backward, :func:`disable_reducer`
switches the reducer off each step (Lightning switches it back on after every
step) and :func:`all_reduce_gradients` averages the stepping optimizer's
gradients, with the skip flags, in one flat collective. Ranks run the same
backwards in the same order, so the collectives match; parameters stay
identical; buffers (BatchNorm statistics) stay rank-local, as with
``broadcast_buffers=False``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from gan_template.harness.errors import LostRank

if TYPE_CHECKING:
    from lightning.pytorch.strategies import DDPStrategy

#: Seconds a collective may wait for the other ranks before the process group
#: gives up (conf/trainer/ddp*.yaml). torch's default is 30 minutes: a node that
#: dies mid-run leaves the others blocked in the gradient all-reduce that long.
#: Must cover the longest stretch in which one rank works alone while the
#: others wait (a final evaluation on rank 0, a checkpoint on a slow disk).
DEFAULT_TIMEOUT_S = 600.0


def ddp_strategy(timeout_s: float = DEFAULT_TIMEOUT_S, **kwargs: Any) -> DDPStrategy:
    """Lightning's ``DDPStrategy`` with its process-group timeout in seconds.

    A config cannot build the ``datetime.timedelta`` Lightning wants (and
    ``datetime.`` is not an allowed ``_target_`` prefix), hence this factory.
    Other keyword arguments go to ``DDPStrategy`` unchanged. The strategy is
    :class:`gan_template.harness.strategy.RestartableDDPStrategy`: under torchrun it
    joins the process group through :func:`elastic_store`.
    """
    from gan_template.harness.strategy import RestartableDDPStrategy  # here: imports Lightning

    if not timeout_s > 0:
        raise ValueError(f"trainer.strategy.timeout_s must be > 0 seconds, got {timeout_s}")
    return RestartableDDPStrategy(timeout=timedelta(seconds=float(timeout_s)), **kwargs)


def elastic_store(timeout: timedelta, environ: Mapping[str, str] = os.environ) -> dist.Store | None:
    """Under torchrun's shared store, a store of this restart's own for ``init_process_group``.

    Since torch 2.4 the c10d rendezvous shares the agent's ``TCPStore`` with
    its workers (``TORCHELASTIC_USE_AGENT_STORE=True``), and since 2.5 torch
    no longer scopes the workers' keys per restart (pytorch#135712, #135957:
    it meant to start a new server per restart; torch 2.14 keeps the old one).
    So after ``--max-restarts`` restarts a group, the new rank 0 can read the
    dead rank 1's gloo address from the first attempt and fail to connect,
    unless the new rank 1 happened to overwrite it first (README: "Restarting
    by itself").
    Scoping the keys by ``TORCHELASTIC_RESTART_COUNT`` is what torch did
    before 2.5. ``None`` outside torchrun or with its store not shared
    (``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``: a fresh store each round).
    """
    if environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    address, port = environ.get("MASTER_ADDR"), environ.get("MASTER_PORT")
    if not address or not port:
        return None
    attempt = environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    restarts = int(environ.get("TORCHELASTIC_MAX_RESTARTS", "0"))
    if restarts > 0 and int(environ.get("GROUP_WORLD_SIZE", "1")) > 1:
        # Each agent counts its own restarts; one that restarts its workers
        # because another node rejoined does not count it, and the counts part.
        warnings.warn(
            "torchrun --max-restarts over several nodes: set TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 "
            "in torchrun's environment on every node, so that each restart gets a fresh store "
            "(with the shared one, nodes whose restart counts differ cannot meet again: "
            "pytorch#135712)",
            stacklevel=2,
        )
    client = dist.TCPStore(
        address, int(port), int(environ.get("WORLD_SIZE", "1")), is_master=False, timeout=timeout
    )
    return dist.PrefixStore(f"gan_template/attempt_{attempt}", client)


def disable_reducer(wrapped_model: nn.Module | None) -> bool:
    """Stop DDP's reducer from synchronising gradients; returns whether ``wrapped_model`` is DDP.

    ``require_backward_grad_sync`` is what ``DistributedDataParallel.no_sync()``
    toggles; Lightning's manual-optimization backward checks the same flag
    before preparing the reducer (``lightning.pytorch.overrides.distributed.prepare_for_backward``).
    Call it inside ``training_step``: Lightning sets the flag back to True
    after every step (``lightning.pytorch.strategies.ddp._DDPForwardRedirection``).
    """
    if not isinstance(wrapped_model, DistributedDataParallel):
        return False
    wrapped_model.require_backward_grad_sync = False
    return True


def all_reduce_gradients(
    parameters: Iterable[nn.Parameter], world_size: int, extra: Tensor | None = None
) -> Tensor | None:
    """Average the gradients of ``parameters`` over all ranks in one flat all-reduce.

    ``extra`` (the skip flags, ``skip.py``) rides in the same buffer and comes
    back *summed* over ranks, so agreeing on a skip costs no collective of its
    own. A parameter without a gradient contributes zeros, so every rank sends
    a buffer of the same layout whatever its local graph looked like.
    """
    if world_size <= 1 or not dist.is_available() or not dist.is_initialized():
        return extra
    grads = []
    for p in parameters:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    pieces = [g.reshape(-1) for g in grads]
    if extra is not None:
        # Pre-multiplied so that the division below leaves the flags summed.
        pieces.append(extra.to(grads[0].dtype) * world_size)
    flat = torch.cat(pieces)
    flat.div_(world_size)
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
    return flat[offset:] if extra is not None else None


def _torchrun_restarts_left(environ: Mapping[str, str] = os.environ) -> bool:
    restarts = int(environ.get("TORCHELASTIC_MAX_RESTARTS", "0"))
    return restarts > int(environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


#: What gloo's errors say when a peer is gone, not when the run's own code is wrong
#: (a size mismatch in a collective is a bug and keeps its traceback).
LOST_PEER_SIGNS = ("by peer", "timed out", "Timed out", "Connection refused", "Broken pipe")


def end_process_group() -> None:
    """Destroy the default process group, if there is one, when the run is over.

    Lightning leaves it to the interpreter's exit, where gloo's threads are torn
    down in no set order: now and then a rank that had saved and printed its
    last message aborted there ("terminate called without an active
    exception", exit -6 instead of 0 or 143, in the SIGTERM study of test_ddp_signals.py).
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_lost_rank(error: BaseException) -> bool:
    """Whether ``error`` is the process group failing, not the run's own code.

    NCCL and the store raise ``torch.distributed.DistError`` subclasses; gloo
    raises a plain ``RuntimeError`` whose message names its source file
    (``gloo/transport/...``) and says how the connection failed.
    """
    if isinstance(error, dist.DistError):
        return True
    text = str(error)
    return (
        isinstance(error, RuntimeError)
        and "gloo" in text.lower()
        and any(sign in text for sign in LOST_PEER_SIGNS)
    )


def lost_rank(error: BaseException, rank: int, iteration: int, checkpoint: str | None) -> LostRank:
    """The message for a run whose group broke at ``iteration``: what happened and how to go on."""
    cause = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    saved = (
        f"the last checkpoint, {checkpoint}, is intact: once every node is up again, start the "
        "same command with ckpt_path=last on every node"
        if checkpoint
        else "no checkpoint had been written yet: start the run again"
    )
    if _torchrun_restarts_left():
        saved += " (torchrun restarts the group by itself: with ckpt_path=auto it resumes there)"
    return LostRank(
        f"rank {rank} lost contact with another rank during iteration {iteration + 1} "
        f"(a process or node died, or the network failed): {cause}. The run cannot go on "
        f"with fewer ranks; {saved}. A peer that dies without closing its connections is "
        "noticed after trainer.strategy.timeout_s seconds."
    )

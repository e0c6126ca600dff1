"""What each piece of the template's own per-iteration work costs, switched off in turn.

    python benchmarks/differential_profile.py --recipe mlp32 --iterations 1500 --repeats 3

cProfile inflates Python against the kernels it calls, so it says where time
goes but not how much; and whole runs, even side by side, differ by more than
a piece costs (10% between two runs of one configuration on this 2-core
machine). So the pieces are switched off *within* one training run: the run
alternates blocks of ``--block`` iterations, every piece on, then one piece
off, then every piece on, then the next piece off, and so on. A piece's cost is
the median, over its off blocks, of (the mean of the two neighbouring all-on
blocks - the off block), each block read as the median of its iterations'
times. Drift slower than a block cancels.

Pieces (each a patch of this process that consults a switch):

- ``gradient norm``: the norm of the gradients (``Updates._gradient_norm``), a zero instead;
- ``gradient check``: the non-finite gradient check (the fused check, or a test of the norm);
- ``flags``: every skip flag (loss, gradient), and so the iteration's one host read;
- ``D statistics``: d_real, d_fake and the accuracies;
- ``epoch means``: the running means of the step outputs;
- ``buffer snapshot``: the copy of running buffers that a skip restores.

Work done once every few iterations shows in no block median. It is read from
the all-on blocks instead: the extra time of the iterations that write a
``train/*`` row, and of those that start an epoch (Lightning's epoch end and
start, the epoch means' row), each divided by how often it happens.

The patches break what they remove (no statistics, no skip on a NaN): they
exist to be timed, never to train with.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import vs_plain_loop

#: Which pieces are on now (flipped between iterations by the Blocks callback).
ON: dict[str, bool] = {}


def switched(piece: str, original: Callable[..., Any], off: Callable[..., Any]) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        return original(*args, **kwargs) if ON[piece] else off(*args, **kwargs)

    return call


def _zero_norm(parameters: Any) -> Any:
    import torch

    return torch.zeros((), device=parameters[0].device)


def _without_snapshot(original: Callable[..., Any]) -> Callable[..., Any]:
    def begin_iteration(self: Any, *args: Any, **kwargs: Any) -> Any:
        saved, self._buffers = self._buffers, []
        try:
            return original(self, *args, **kwargs)
        finally:
            self._buffers = saved

    return begin_iteration


def patches() -> dict[str, tuple[Any, str, Any]]:
    """piece -> (owner, attribute, replacement that consults ON[piece])."""
    from gan_template import loggers, module, update

    Updates = update.Updates
    found: dict[str, tuple[Any, str, Any]] = {
        "gradient norm": (
            Updates,
            "_gradient_norm",
            staticmethod(switched("gradient norm", Updates._gradient_norm, _zero_norm)),
        ),
        "flags": (
            Updates,
            "_update_flags",
            switched("flags", Updates._update_flags, lambda *args: None),
        ),
        "D statistics": (
            module,
            "discriminator_statistics",
            switched("D statistics", module.discriminator_statistics, lambda *args: {}),
        ),
        "epoch means": (
            loggers.EpochMeans,
            "update",
            switched("epoch means", loggers.EpochMeans.update, lambda *args: None),
        ),
        "buffer snapshot": (
            Updates,
            "begin_iteration",
            switched(
                "buffer snapshot",
                Updates.begin_iteration,
                _without_snapshot(Updates.begin_iteration),
            ),
        ),
    }
    if hasattr(Updates, "_flag_gradients"):  # the fused check (absent before it existed)
        found["gradient check"] = (
            Updates,
            "_flag_gradients",
            switched("gradient check", Updates._flag_gradients, lambda *args: None),
        )
    return found


@contextmanager
def installed(chosen: list[str]) -> Iterator[None]:
    known = patches()
    with ExitStack() as stack:
        for piece in chosen:
            owner, name, value = known[piece]
            stack.enter_context(mock.patch.object(owner, name, value))
            ON[piece] = True
        yield


class Blocks:
    """Time stamps per iteration, and the switches: all on, one off, all on, the next off, ..."""

    def __init__(self, pieces: list[str], block: int) -> None:
        self.pieces, self.block = pieces, block
        self.states = [s for piece in pieces for s in (None, piece)]  # None: every piece on
        self.stamps: list[float] = []
        self.state_of: list[str | None] = []  # of the interval ending at each stamp
        self.logged: list[bool] = []
        self.epoch_start: list[bool] = []

    def state(self, iteration: int) -> str | None:
        return self.states[(iteration // self.block) % len(self.states)]

    def callback(self) -> Any:
        from lightning.pytorch.callbacks import Callback

        blocks = self

        class Switch(Callback):
            def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:  # fmt: skip
                blocks.stamps.append(time.perf_counter())
                blocks.epoch_start.append(batch_idx == 0)
                logs_at = getattr(pl_module, "_logs_at", None)  # (_logging_step before it)
                logged = logs_at(pl_module.iteration) if logs_at else pl_module._logging_step()
                blocks.logged.append(logged)
                current = blocks.state(len(blocks.stamps))  # of the next interval
                for piece in blocks.pieces:
                    ON[piece] = piece != current
                blocks.state_of.append(blocks.state(len(blocks.stamps) - 1))

        return Switch()


def analyse(blocks: Blocks, warmup: int) -> dict[str, Any]:
    """Per piece: (on - off) per off block, in seconds; and the periodic extras of all-on blocks."""
    intervals = [b - a for a, b in itertools.pairwise(blocks.stamps)]
    # Interval i runs from stamp i to stamp i + 1: iteration i + 1's batch end, preceded by
    # iteration i's module hooks (its row, if it logs) and, at an epoch start, the epoch change.
    states = blocks.state_of[1:]
    after_log = blocks.logged[:-1]
    epoch_start = blocks.epoch_start[1:]
    runs: list[tuple[str | None, list[int]]] = []
    for index in range(warmup, len(intervals)):
        if runs and runs[-1][0] == states[index] and len(runs[-1][1]) < blocks.block:
            runs[-1][1].append(index)
        else:
            runs.append((states[index], [index]))
    quiet = [not after_log[i] and not epoch_start[i] for i in range(len(intervals))]

    def block_median(indices: list[int]) -> float | None:
        times = [intervals[i] for i in indices if quiet[i]]
        return statistics.median(times) if len(times) >= 3 else None

    costs: dict[str, list[float]] = {piece: [] for piece in blocks.pieces}
    for position in range(1, len(runs) - 1):
        piece, indices = runs[position]
        if piece is None:
            continue
        before, after = block_median(runs[position - 1][1]), block_median(runs[position + 1][1])
        off = block_median(indices)
        if None not in (before, after, off):
            costs[piece].append((before + after) / 2 - off)  # type: ignore[operator]
    on = [i for state, indices in runs if state is None for i in indices]
    typical = statistics.median(intervals[i] for i in on if quiet[i])
    logged = [intervals[i] - typical for i in on if after_log[i] and not epoch_start[i]]
    starts = [intervals[i] - typical for i in on if epoch_start[i] and not after_log[i]]
    return {"costs": costs, "typical": typical, "log_extra": logged, "epoch_extra": starts}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", choices=sorted(vs_plain_loop.RECIPES), default="mlp32")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--warmup", type=int, default=60)
    parser.add_argument("--block", type=int, default=10, help="iterations per block")
    parser.add_argument("--repeats", type=int, default=3, help="runs (their blocks are pooled)")
    parser.add_argument("--overrides", nargs="*", default=[], help="Hydra overrides for all runs")
    parser.add_argument("--pieces", nargs="*", help="only these pieces (default: all)")
    args = parser.parse_args()
    vs_plain_loop.refuse_untimeable(parser, args)
    known = list(patches())
    chosen = args.pieces if args.pieces is not None else known
    if unknown := [p for p in chosen if p not in known]:
        parser.error(f"unknown pieces {unknown}; choose from {known}")

    from gan_template.harness.environment import avoid_per_step_gpu_probing
    from gan_template.harness.train import train

    avoid_per_step_gpu_probing()
    pooled: dict[str, Any] = {"costs": {p: [] for p in chosen}, "typical": []}
    pooled |= {"log_extra": [], "epoch_extra": []}
    log_every = epoch_length = 0
    for repeat in range(args.repeats):
        blocks = Blocks(chosen, args.block)
        with tempfile.TemporaryDirectory(prefix="differential_") as run_dir, installed(chosen):
            cfg = vs_plain_loop.compose(
                args.recipe, args.device, args.precision, args.iterations, Path(run_dir),
                args.overrides,
            )  # fmt: skip
            log_every = cfg.trainer.log_every_n_steps
            train(cfg, extra_callbacks=[blocks.callback()])
        epoch_length = blocks.epoch_start[1:].index(True) + 1 if any(blocks.epoch_start[1:]) else 0
        result = analyse(blocks, args.warmup)
        for piece in chosen:
            pooled["costs"][piece] += result["costs"][piece]
        pooled["typical"].append(result["typical"])
        pooled["log_extra"] += result["log_extra"]
        pooled["epoch_extra"] += result["epoch_extra"]
        print(f"run {repeat + 1}/{args.repeats} done", flush=True)

    typical = statistics.median(pooled["typical"])
    print(
        f"recipe={args.recipe} device={args.device} precision={args.precision} "
        f"iterations={args.iterations} block={args.block} runs={args.repeats} "
        f"overrides={args.overrides}"
    )
    print(f"a quiet iteration, every piece on: {1000 * typical:.3f} ms (median)")
    print(f"{'piece':<17} {'us / iteration':>15} {'% of it':>8} {'quartiles':>18} {'blocks':>7}")

    def line(name: str, values: list[float], scale: float = 1.0) -> None:
        if len(values) < 2:
            print(f"{name:<17} {'too few':>15}")
            return
        q1, q2, q3 = (1e6 * scale * q for q in statistics.quantiles(values, n=4))
        print(
            f"{name:<17} {q2:>15.0f} {100 * q2 / (1e6 * typical):>7.1f}% "
            f"{f'[{q1:.0f}, {q3:.0f}]':>18} {len(values):>7}"
        )

    for piece in chosen:
        line(piece, pooled["costs"][piece])
    if log_every:
        line(f"train/* row /{log_every}", pooled["log_extra"], 1 / log_every)
    if epoch_length:
        line(f"epoch change /{epoch_length}", pooled["epoch_extra"], 1 / epoch_length)
    print(
        "us / iteration: median over off blocks of (neighbouring on blocks - off block); the "
        "last two rows: the extra time of the iterations that do it, spread over the others"
    )


if __name__ == "__main__":
    main()

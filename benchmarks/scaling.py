"""How the template's cost grows with the work: batch size and network width against the plain loop.

    python benchmarks/scaling.py --batches 64 128 256 512 1024 --widths 0.5 1 2 --repeats 5

The mlp32 networks (Lightning's GAN example, ``vs_plain_loop.py --recipe
mlp32``), first at width 1 over the batch sizes, then at batch 64 over the
widths (every hidden layer of both networks scaled). At each point the
template and the plain loop run side by side in this one process, ``--repeats``
times; the ratio is the median of the paired ratios. A template whose own work
is a constant per iteration has an overhead (template - plain, in ms) that
stays flat while the ratio tends to 1 as the iteration grows.

``--plot FILE`` draws both series (ms per iteration and ratio) into a PNG.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import vs_plain_loop

GENERATOR_WIDTHS = (128, 256, 512, 1024)
DISCRIMINATOR_WIDTHS = (512, 256)


def width_overrides(scale: float) -> list[str]:
    def scaled(widths: tuple[int, ...]) -> str:
        return "[" + ",".join(str(max(1, round(w * scale))) for w in widths) + "]"

    return [
        f"model.generator.widths={scaled(GENERATOR_WIDTHS)}",
        f"model.discriminator.widths={scaled(DISCRIMINATOR_WIDTHS)}",
    ]


def measure_point(args: argparse.Namespace, overrides: list[str]) -> dict[str, float]:
    """Template and plain at one point, alternating; medians and the paired ratio."""
    saved = args.overrides
    args.overrides = [*saved, *overrides]
    times: dict[str, list[float]] = {"template": [], "plain": []}
    try:
        for repeat in range(args.repeats):
            order = ("template", "plain") if repeat % 2 == 0 else ("plain", "template")
            for kind in order:
                times[kind].append(vs_plain_loop.measure(kind, args)["median_s"])
    finally:
        args.overrides = saved
    pairs = list(zip(times["template"], times["plain"], strict=True))
    return {
        "template_ms": 1000 * statistics.median(times["template"]),
        "plain_ms": 1000 * statistics.median(times["plain"]),
        "overhead_ms": 1000 * statistics.median(t - p for t, p in pairs),
        "ratio": statistics.median(t / p for t, p in pairs),
        "spread": max(t / p for t, p in pairs) - min(t / p for t, p in pairs),
    }


def plot(path: Path, batches: list[tuple[int, dict]], widths: list[tuple[float, dict]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(10, 6.5), sharex="col")
    for column, (series, label) in enumerate(
        ((batches, "batch size (width 1x)"), (widths, "network width (batch 64)"))
    ):
        x = [point for point, _ in series]
        top, bottom = axes[0][column], axes[1][column]
        top.plot(x, [r["template_ms"] for _, r in series], "o-", label="template")
        top.plot(x, [r["plain_ms"] for _, r in series], "s--", label="plain loop")
        top.set_ylabel("ms / iteration")
        top.legend()
        bottom.plot(x, [r["ratio"] for _, r in series], "o-")
        bottom.axhline(1.0, color="grey", linewidth=0.8)
        bottom.set_ylabel("template / plain")
        bottom.set_xlabel(label)
        for axis in (top, bottom):
            axis.set_xscale("log", base=2)
            axis.set_xticks(x, [f"{v:g}" for v in x])
    figure.suptitle("mlp32 on 2 CPU cores: the template's cost as the work grows")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, nargs="*", default=[64, 128, 256, 512, 1024])
    parser.add_argument("--widths", type=float, nargs="*", default=[0.5, 1.0, 2.0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--overrides", nargs="*", default=[], help="Hydra overrides for all runs")
    parser.add_argument("--plot", type=Path, help="write the plot to this PNG")
    args = parser.parse_args()
    vs_plain_loop.refuse_untimeable(parser, args)
    args.recipe = "mlp32"

    batches = [(b, measure_point(args, [f"data.batch_size={b}"])) for b in args.batches]
    widths = [(w, measure_point(args, width_overrides(w))) for w in args.widths]
    print(
        f"recipe=mlp32 device={args.device} precision={args.precision} "
        f"iterations={args.iterations} repeats={args.repeats} overrides={args.overrides}"
    )
    header = f"{'point':<14} {'template ms':>12} {'plain ms':>9} {'overhead ms':>12} {'ratio':>7} {'spread':>7}"  # fmt: skip
    print(header)
    for name, series in (("batch", batches), ("width", widths)):
        for point, r in series:
            print(
                f"{f'{name} {point:g}':<14} {r['template_ms']:>12.2f} {r['plain_ms']:>9.2f} "
                f"{r['overhead_ms']:>12.2f} {r['ratio']:>6.3f}x {r['spread']:>7.3f}"
            )
    print("overhead, ratio: medians over repeats of (template - plain), (template / plain)")
    print("spread: largest minus smallest paired ratio")
    if args.plot:
        plot(args.plot, batches, widths)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()

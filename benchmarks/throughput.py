"""Throughput of each recipe as users run it: images per second and seconds per thousand images.

    python benchmarks/throughput.py --repeats 3
    python benchmarks/throughput.py --device cuda --experiments r3gan_cifar10 --precision bf16-mixed
    python benchmarks/throughput.py --experiments "dcgan data.resolution=32" \
        "latent_gan_digits data.autoencoder=<autoencoder run>/checkpoints/last.ckpt"

Each ``experiment=...`` recipe runs under the template, built as ``python -m
gan_template`` builds it (evaluations, sample grids and checkpoints off, as in
``vs_plain_loop.py``), ``--repeats`` times in this one process. Reported: the
median time per iteration, the real images (toy points) the discriminator sees
per second, and s/kimg, seconds per thousand of them, the unit stylegan2-ada
and stylegan3 report (their ``Timing/sec_per_kimg``; kimg counts real images
shown to the discriminator, here ``n_critic x data.batch_size`` per iteration).
"""

from __future__ import annotations

import argparse
import statistics

import vs_plain_loop

#: The recipes that train on the CPU (r3gan_cifar10 and r3gan_ffhq64 need a GPU and their data).
EXPERIMENTS = ["ring", "grid", "dcgan", "relativistic", "r1", "sngan", "wgan_gp", "r3gan"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--experiments",
        nargs="+",
        default=EXPERIMENTS,
        help='recipes, each optionally with overrides of its own: "dcgan data.resolution=32"',
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--overrides", nargs="*", default=[], help="Hydra overrides for all runs")
    args = parser.parse_args()
    vs_plain_loop.refuse_untimeable(parser, args)

    results: dict[str, list[dict[str, float]]] = {name: [] for name in args.experiments}
    for _ in range(args.repeats):
        for name in args.experiments:  # alternate the recipes
            experiment, *own = name.split()
            vs_plain_loop.RECIPES[name] = [f"experiment={experiment}", *own]
            args.recipe = name
            results[name].append(vs_plain_loop.measure("template", args))
    print(
        f"device={args.device} precision={args.precision} iterations={args.iterations} "
        f"repeats={args.repeats} overrides={args.overrides}"
    )
    width = max(14, *(len(name) for name in results))
    print(f"{'experiment':<{width}} {'images / it':>12} {'ms / it':>9} {'images / s':>11} {'s / kimg':>9}")  # fmt: skip
    for name, runs in results.items():
        seconds = statistics.median(r["median_s"] for r in runs)
        images = runs[0]["samples_per_iteration"]
        print(
            f"{name:<{width}} {images:>12.0f} {1000 * seconds:>9.2f} {images / seconds:>11.0f} "
            f"{1000 * seconds / images:>9.3f}"
        )
    print("images: real samples (toy points for ring and grid) shown to D per iteration")


if __name__ == "__main__":
    main()

"""Mode coverage of the toy recipes over several seeds, next to PacGAN's published figures.

    python benchmarks/toy_study.py --experiments ring grid --seeds 0 1 2 [-- extra overrides]

Each run is ``python -m gan_template experiment=E seed=S`` exactly as a user
would type it; the table reads each run's ``final_metrics.json``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from child import training_run

# Lin et al. (2018), PacGAN, tables 2 and 3: mean over 10 runs of (modes, % high quality, reverse KL).
PUBLISHED = {
    "ring": {"GAN": (6.3, 98.2, 0.45), "PacGAN2": (7.9, 95.6, 0.07)},
    "grid": {"GAN": (17.3, 94.8, 0.70), "PacGAN4": (24.8, 93.6, 0.04)},
}


def run_one(experiment: str, seed: int, overrides: list[str], root: Path) -> dict:
    return training_run(
        [f"experiment={experiment}", f"seed={seed}", *overrides],
        root / f"{experiment}_seed{seed}",
        "toy",
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--experiments", nargs="+", default=["ring", "grid"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--out", type=Path, default=None, help="keep the runs here (default: a temp dir)"
    )
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="toy_study_"))

    print(f"{'experiment':<10} {'seed':>4} {'modes':>7} {'HQ %':>6} {'rev KL':>7} {'time s':>7}")
    for experiment in args.experiments:
        results = []
        for seed in args.seeds:
            r = run_one(experiment, seed, args.overrides, root)
            results.append(r)
            print(
                f"{experiment:<10} {seed:>4} {r['modes_captured']:>3.0f}/{r['num_modes']:<3.0f}"
                f" {100 * r['high_quality']:>6.1f} {r['reverse_kl']:>7.3f} {r['seconds']:>7.1f}",
                flush=True,
            )
        modes = [r["modes_captured"] for r in results]
        hq = [100 * r["high_quality"] for r in results]
        kl = [r["reverse_kl"] for r in results]

        def fmt(values: list[float], digits: int) -> str:
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"

        print(
            f"{experiment:<10} mean over {len(results)} seeds: modes {fmt(modes, 1)}, "
            f"HQ {fmt(hq, 1)} %, reverse KL {fmt(kl, 3)}"
        )
        for name, (m, h, k) in PUBLISHED[experiment].items():
            print(f"{'':<10} published {name}: modes {m}, HQ {h} %, reverse KL {k}")
    print(f"runs kept in {root}")


if __name__ == "__main__":
    main()

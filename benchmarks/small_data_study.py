"""Image quality with few training images, with and without DiffAugment, over seeds.

    python benchmarks/small_data_study.py --limits 200 1797 --augments none diffaugment --seeds 0 1 2
    python benchmarks/small_data_study.py --recipes relativistic        # another experiment

Each run is ``python -m gan_template experiment=R data.limit=N augment=A seed=S``
as a user would type it (``data.limit=N`` trains on N of the embedded digits,
fixed by ``data.data_seed``); the table reads each run's ``final_metrics.json``.
FID and KID use the offline classifier's features and compare with all
1,797 digits, whatever the limit; lower is better. Classes: digits among the
10 that confidently classified samples cover.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
from pathlib import Path

from child import training_run


def run_one(recipe: str, limit: int, augment: str, seed: int, extra: list[str], root: Path) -> dict:
    return training_run(
        [
            f"experiment={recipe}",
            f"data.limit={limit}",
            f"augment={augment}",
            f"seed={seed}",
            *extra,
        ],
        root / f"{recipe}_limit{limit}_{augment}_seed{seed}",
        "image",
    )


def mean_std(values: list[float], digits: int) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipes", nargs="+", default=["dcgan"])
    parser.add_argument("--limits", nargs="+", type=int, default=[200, 1797])
    parser.add_argument("--augments", nargs="+", default=["none", "diffaugment"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=None, help="keep the runs here")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="small_data_study_"))

    print(f"{'recipe':<13} {'images':>6} {'augment':<12} {'seed':>4} {'FID':>7} {'KID':>8} {'classes':>7} {'time s':>7}")  # fmt: skip
    summary = []
    for recipe, limit, augment in itertools.product(args.recipes, args.limits, args.augments):
        results = []
        for seed in args.seeds:
            r = run_one(recipe, limit, augment, seed, args.overrides, root)
            results.append(r)
            print(
                f"{recipe:<13} {limit:>6} {augment:<12} {seed:>4} {r['fid']:>7.2f} "
                f"{r['kid_mean']:>8.2f} {r['classes_covered']:>7} {r['seconds']:>7.0f}",
                flush=True,
            )
        summary.append(
            f"| `experiment={recipe} data.limit={limit} augment={augment}` | "
            f"{mean_std([r['fid'] for r in results], 2)} | "
            f"{mean_std([r['kid_mean'] for r in results], 2)} | "
            f"{mean_std([float(r['classes_covered']) for r in results], 1)} |"
        )
    print(f"\nmean ± std over seeds {args.seeds}:")
    print("| run | FID | KID | classes (of 10) |\n|---|---|---|---|")
    print("\n".join(summary))
    print(f"runs kept in {root}")


if __name__ == "__main__":
    main()

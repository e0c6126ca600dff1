"""Image quality with few training images, with and without augmentation, over seeds.

    python benchmarks/small_data_study.py --limits 200 1797 --augments none diffaugment --seeds 0 1 2
    python benchmarks/small_data_study.py --recipes relativistic        # another experiment
    python benchmarks/small_data_study.py --recipes r3gan --limits 1797 --augments none -- train.iterations=1400

Each run is ``python -m gan_template experiment=R data.limit=N augment=A seed=S``
as a user would type it (``data.limit=N`` trains on N of the embedded digits,
fixed by ``data.data_seed``); the table reads each run's ``final_metrics.json``.
FID and KID use the offline classifier's features and compare with all
1,797 digits, whatever the limit; lower is better. Precision, recall, density
and coverage (``gan_template/metrics/prdc.py``) use the same features; higher is
better. Classes: digits among the 10 that confidently classified samples cover.
Time: the whole ``python -m gan_template`` process (training, the evaluations
and the start-up), in seconds.
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

    print(f"{'recipe':<13} {'images':>6} {'augment':<12} {'seed':>4} {'FID':>7} {'KID':>8} {'P':>5} {'R':>5} {'D':>5} {'C':>5} {'classes':>7} {'time s':>7}")  # fmt: skip
    summary = []
    for recipe, limit, augment in itertools.product(args.recipes, args.limits, args.augments):
        results = []
        for seed in args.seeds:
            r = run_one(recipe, limit, augment, seed, args.overrides, root)
            results.append(r)
            print(
                f"{recipe:<13} {limit:>6} {augment:<12} {seed:>4} {r['fid']:>7.2f} "
                f"{r['kid_mean']:>8.2f} {r['precision']:>5.3f} {r['recall']:>5.3f} "
                f"{r['density']:>5.3f} {r['coverage']:>5.3f} {r['classes_covered']:>7} "
                f"{r['seconds']:>7.0f}",
                flush=True,
            )
        columns = ["fid", "kid_mean", "precision", "recall", "density", "coverage"]
        cells = [
            mean_std([r[c] for r in results], 2 if c in ("fid", "kid_mean") else 3) for c in columns
        ]
        cells.append(mean_std([float(r["classes_covered"]) for r in results], 1))
        cells.append(f"{statistics.mean(r['seconds'] for r in results):.0f}")
        overrides = " ".join(args.overrides)
        summary.append(
            f"| `experiment={recipe} data.limit={limit} augment={augment} {overrides}".rstrip()
            + "` | "
            + " | ".join(cells)
            + " |"
        )
    print(f"\nmean ± std over seeds {args.seeds}:")
    print(
        "| run | FID | KID | precision | recall | density | coverage | classes (of 10) | time s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(summary))
    print(f"runs kept in {root}")


if __name__ == "__main__":
    main()

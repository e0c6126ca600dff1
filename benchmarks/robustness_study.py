"""Do the recipes hold on data they were not tuned on? Every image recipe, several settings, seeds.

    python benchmarks/robustness_study.py --out outputs/robustness              # the README's table
    python benchmarks/robustness_study.py --recipes dcgan r3gan --settings colour --seeds 0 1 2
    python benchmarks/robustness_study.py --settings colour --figure dcgan_seed0 r3gan_seed0

The recipes were tuned on the grey digits at 16 px (all 1,797 images). Each
setting here changes one thing a user's data changes: how much of it there is
(``subset``: 500 images, metrics against all 1,797; with 200, the recipes of 5
discriminator updates an iteration cannot fill their 320 images a step), its colour
(``colour``: ``data=colour_digits``, each digit in a colour of its own) and its
resolution (``res32``: 32 px). Every recipe runs ``--iterations`` iterations
(equal iterations; its schedules stretch to the run), as a user types it
(``python -m gan_template experiment=R ... seed=S``), and ``experiment=dcgan``
runs once more per setting and seed for as long as ``--equal-time-to``'s run
trained (equal time: its length from the two runs' time per iteration, each
the process time less that of a 1-iteration run, which is start-up and the
final evaluation).

Figures: the end-of-run evaluation of each run (``final_metrics.json``: 1,000
samples against the data, the offline classifier's features, as every run
reports), mean and standard deviation over the seeds; time is the whole
process. Each finished run is kept under ``--out`` and reused when the study
is started again (a study interrupted loses only the run in progress).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

from child import RUN_OVERRIDES, training_run

RECIPES = ["dcgan", "wgan_gp", "sngan", "r1", "relativistic", "r3gan"]
SETTINGS = {
    "subset": ["data.limit=500"],
    "colour": ["data=colour_digits"],
    "res32": ["data.resolution=32"],
}
COLUMNS = ["fid", "precision", "recall", "coverage", "seconds"]


def composed_config(overrides: list[str]) -> str:
    """The config ``python -m gan_template <overrides>`` composes now (unresolved YAML).

    Kept with each finished run: a recipe whose YAML (or a default it reads)
    changed since no longer matches it. Changes to the code alone are not seen:
    clear ``--out`` after them.
    """
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from gan_template.__main__ import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return OmegaConf.to_yaml(compose("config", overrides=[*overrides, *RUN_OVERRIDES]))


def run_once(name: str, overrides: list[str], root: Path) -> dict:
    """One training run, or the result of the same run finished earlier.

    The same run: the same overrides, composing to the config the run trained
    with (a recipe changed since is run again, its old run directory kept
    beside it as ``<name>.replaced-<n>``). The config is the one recorded when
    the run finished, not its ``.hydra/config.yaml``: Hydra rewrites that file
    even for a run the template then refuses to start there.
    """
    run_dir = root / name
    record = run_dir / "study.json"
    config = composed_config(overrides)
    if record.is_file():
        kept = json.loads(record.read_text())
        if kept["overrides"] == overrides and kept.get("config") == config:
            return kept["result"]
    if run_dir.exists():
        kept_as = next(
            path
            for n in itertools.count(1)
            if not (path := run_dir.with_name(f"{run_dir.name}.replaced-{n}")).exists()
        )
        run_dir.rename(kept_as)  # the run refuses a directory holding one; nothing is deleted
        print(f"{name}: its overrides or its recipe changed since it ran: running it again "
              f"(the old run moved to {kept_as})")  # fmt: skip
    result = training_run(overrides, run_dir, "image")
    record.write_text(
        json.dumps({"overrides": overrides, "config": config, "result": result}, indent=1)
    )
    return result


def spread(values: list[float], digits: int) -> str:
    deviation = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {deviation:.{digits}f}"


def row(label: str, results: list[dict]) -> str:
    cells = [
        spread([r[c] for r in results], 0 if c == "seconds" else 2 if c == "fid" else 3)
        for c in COLUMNS
    ]
    return f"| {label} | " + " | ".join(cells) + " |"


def summary(by_setting: dict[str, dict[str, list[dict]]], slow: str) -> str:
    """One table: each recipe's FID and recall (mean ± std over seeds) in every setting."""
    settings = list(by_setting)
    recipes = list(dict.fromkeys(r for results in by_setting.values() for r in results))
    lines = [
        "| recipe | " + " | ".join(f"{s}: FID | {s}: recall" for s in settings) + " |",
        "|---|" + "---|---|" * len(settings),
    ]
    for recipe in recipes:
        cells = []
        for setting in settings:
            rs = by_setting[setting].get(recipe)
            cells += (
                [spread([r["fid"] for r in rs], 1), spread([r["recall"] for r in rs], 2)]
                if rs
                else ["-", "-"]
            )
        label = f"dcgan for {slow}'s time" if recipe == "dcgan_equal_time" else recipe
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(root: Path, setting: str, runs: list[str], out: Path) -> None:
    """The data beside each run's final sample grid (``samples/grid_last.png``), labelled."""
    from PIL import Image, ImageDraw
    from torchvision.utils import save_image

    from gan_template.data.images import ImageDataModule

    data = ImageDataModule(name="colour_digits", channels=3) if setting == "colour" else None
    data = data or ImageDataModule(resolution=32 if setting == "res32" else 16)
    data.setup("fit")
    real = root / setting / "data.png"
    save_image(data.real_samples(100, seed=1)[0] * 0.5 + 0.5, real, nrow=10, pad_value=1.0)
    panels = [(real, "data")] + [
        (root / setting / r / "samples" / "grid_last.png", r) for r in runs
    ]
    images = [Image.open(path).convert("RGB") for path, _ in panels]
    side = max(image.height for image in images) * 2
    canvas = Image.new("RGB", ((side + 10) * len(images) - 10, side + 24), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (image, (_, label)) in enumerate(zip(images, panels, strict=True)):
        canvas.paste(image.resize((side, side), Image.Resampling.NEAREST), (i * (side + 10), 24))
        draw.text((i * (side + 10) + 4, 5), label, fill="black")
    canvas.save(out)
    print(f"Wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipes", nargs="+", default=RECIPES)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument(
        "--equal-time-to", default="r3gan",
        help="DCGAN also runs as long as this recipe did ('' for none)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("outputs/robustness"))
    parser.add_argument(
        "--figure", nargs="+", metavar="RUN",
        help="only draw the data beside these finished runs of the first setting "
        "(e.g. dcgan_seed0 r3gan_seed0) into --figure-out",
    )  # fmt: skip
    parser.add_argument("--figure-out", type=Path, default=Path("robustness.png"))
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args()
    if args.figure:
        figure(args.out, args.settings[0], args.figure, args.figure_out)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    tables = []
    by_setting: dict[str, dict[str, list[dict]]] = {}
    for setting in args.settings:
        results: dict[str, list[dict]] = {}
        # What a run costs besides its iterations (start-up, the offline classifier, the
        # final evaluation): the time of a 1-iteration run, once the classifier is cached.
        for name in ("warm_up", "overhead"):
            overhead = run_once(
                f"{setting}/{name}", ["experiment=dcgan", *SETTINGS[setting], "train.iterations=1"],
                args.out,
            )["seconds"]  # fmt: skip
        for seed in args.seeds:
            for recipe in args.recipes:
                overrides = [
                    f"experiment={recipe}", *SETTINGS[setting], f"seed={seed}",
                    f"train.iterations={args.iterations}", *args.overrides,
                ]  # fmt: skip
                r = run_once(f"{setting}/{recipe}_seed{seed}", overrides, args.out)
                results.setdefault(recipe, []).append(r)
                print(
                    f"{setting:<7} {recipe:<13} seed {seed}: FID {r['fid']:6.2f}  P "
                    f"{r['precision']:.3f}  R {r['recall']:.3f}  C {r['coverage']:.3f}  "
                    f"{r['seconds']:5.0f} s",
                    flush=True,
                )
            slow = args.equal_time_to
            if slow and slow in results and "dcgan" in results:
                # DCGAN for the other recipe's time: its iterations from the two measured times.
                ratio = (results[slow][-1]["seconds"] - overhead) / max(
                    1.0, results["dcgan"][-1]["seconds"] - overhead
                )
                iterations = max(100, round(args.iterations * ratio / 100) * 100)
                overrides = [
                    "experiment=dcgan", *SETTINGS[setting], f"seed={seed}",
                    f"train.iterations={iterations}", *args.overrides,
                ]  # fmt: skip
                r = run_once(f"{setting}/dcgan_equal_time_seed{seed}", overrides, args.out)
                r["iterations"] = iterations
                results.setdefault("dcgan_equal_time", []).append(r)
                print(f"{setting:<7} dcgan, {iterations} it. (the time of {slow}): FID {r['fid']:6.2f}  P {r['precision']:.3f}  R {r['recall']:.3f}  C {r['coverage']:.3f}  {r['seconds']:5.0f} s", flush=True)  # fmt: skip
        lines = [
            f"\n`{' '.join(SETTINGS[setting])}` ({setting}), {args.iterations} iterations, "
            f"seeds {' '.join(map(str, args.seeds))}, mean ± std:",
            "| recipe | FID | precision | recall | coverage | time s |",
            "|---|---|---|---|---|---|",
        ]
        for recipe, rs in results.items():
            label = f"`experiment={recipe}`"
            if recipe == "dcgan_equal_time":
                its = sorted({r["iterations"] for r in rs})
                label = f"`experiment=dcgan` for {args.equal_time_to}'s time ({'/'.join(map(str, its))} it.)"  # fmt: skip
            lines.append(row(label, rs))
        tables.append("\n".join(lines))
        print(tables[-1], flush=True)
        by_setting[setting] = results
    print("\n".join(tables))
    print(summary(by_setting, args.equal_time_to))
    print(f"\n{time.perf_counter() - started:.0f} s in all; runs kept in {args.out}")


if __name__ == "__main__":
    main()

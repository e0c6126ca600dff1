"""Each speed switch of the template against the same run without it.

    python benchmarks/fast_paths.py --recipe dcgan32                 # CPU
    python benchmarks/fast_paths.py --recipe dcgan64 --device cuda   # GPU

Every switch is a config override (the README lists them); each one's runs
alternate with baseline runs in fresh processes, ``--repeats`` times, and the
table shows the median time per iteration and the median of the paired ratios
(switch / the baseline run next to it). Below 1.000x the switch is faster.

``--data folder`` writes the digits as PNG files to a temporary image folder
and trains from it (``data=folder``): the setting where DataLoader workers and
pinned memory matter. The in-memory default datasets need no workers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from child import run_child
from vs_plain_loop import RECIPES, refuse_untimeable


def adam(fused: bool, foreach: bool) -> list[str]:
    """Overrides picking one of torch's Adam implementations for both networks."""
    return [
        f"optim.{net}.{key}={str(value).lower()}"
        for net in ("generator", "discriminator")
        for key, value in (("fused", fused), ("foreach", foreach))
    ]


# The default is fused Adam (conf/optim/adam.yaml); the other two are switches away from it.
SWITCHES: dict[str, list[str]] = {
    "foreach Adam": adam(fused=False, foreach=True),
    "for-loop Adam": adam(fused=False, foreach=False),
    "channels_last": ["train.channels_last=true"],
    "torch.compile": ["train.compile=true"],
    "bf16-mixed": ["trainer.precision=bf16-mixed"],
}
CUDA_ONLY = {"cudnn.benchmark": ["trainer.benchmark=true"]}
FOLDER_ONLY = {"2 workers, pinned": ["data.num_workers=2", "data.pin_memory=true"]}


def write_digit_folder(root: Path, resolution: int) -> None:
    """The digits dataset as PNG files in ``root/<label>/<index>.png`` (RGB)."""
    from torchvision.utils import save_image

    from gan_template.data.images import load_digits_tensor

    images, labels = load_digits_tensor(resolution, channels=3)
    for index, (image, label) in enumerate(zip(images, labels.tolist(), strict=True)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        save_image(image * 0.5 + 0.5, folder / f"{index}.png")


def measure(args: argparse.Namespace, overrides: list[str]) -> float:
    command = [
        sys.executable,
        str(Path(__file__).with_name("vs_plain_loop.py")),
        "--worker=template",
        f"--recipe={args.recipe}",
        f"--device={args.device}",
        f"--iterations={args.iterations}",
        f"--warmup={args.warmup}",
        "--overrides",
        *overrides,
    ]
    output = run_child(command)
    return json.loads(output.strip().splitlines()[-1])["median_s"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="dcgan32")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--data", choices=["memory", "folder"], default="memory")
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="measure only these switches (names as listed)")
    args = parser.parse_args()
    refuse_untimeable(parser, args)  # its runs are vs_plain_loop's, timed by its Clock

    with tempfile.TemporaryDirectory(prefix="fast_paths_digits_") as folder:
        run(args, Path(folder))


def run(args: argparse.Namespace, root: Path) -> None:
    """Measure the switches; ``root`` holds the image folder of ``--data folder``."""
    baseline: list[str] = []
    switches = dict(SWITCHES) | (CUDA_ONLY if args.device == "cuda" else {})
    if args.data == "folder":
        resolution = int(next(o for o in RECIPES[args.recipe] if "resolution" in o).split("=")[1])
        write_digit_folder(root, resolution)
        baseline = ["data=folder", f"data.root={root}", "data.num_workers=0", "data.pin_memory=false"]  # fmt: skip
        switches = FOLDER_ONLY
    if args.only:
        switches = {name: switches[name] for name in args.only}

    rows = []
    for name, overrides in switches.items():
        pairs = []
        for _ in range(args.repeats):
            pairs.append((measure(args, baseline), measure(args, [*baseline, *overrides])))
        base = statistics.median(b for b, _ in pairs)
        fast = statistics.median(f for _, f in pairs)
        ratio = statistics.median(f / b for b, f in pairs)
        rows.append((name, " ".join(overrides), base, fast, ratio))
        print(f"  measured {name}: {ratio:.3f}x", file=sys.stderr, flush=True)

    print(f"recipe={args.recipe} device={args.device} data={args.data} repeats={args.repeats}")
    print(f"{'switch':<20} {'baseline ms':>12} {'switched ms':>12} {'ratio':>8}  overrides")
    for name, overrides, base, fast, ratio in rows:
        print(f"{name:<20} {1000 * base:>12.2f} {1000 * fast:>12.2f} {ratio:>7.3f}x  {overrides}")


if __name__ == "__main__":
    main()

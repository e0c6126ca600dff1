"""What DDP and the cross-rank skip agreement cost per iteration, on this machine.

    python benchmarks/ddp_cost.py [--iterations 400] [--warmup 50] [--repeats 3] [-- extra overrides]

Runs the toy ring recipe (batch 256 per process) as users run it, in four
configurations, alternating them ``--repeats`` times, and prints the median
time per iteration (after a warm-up) and ratios:

- 1 process vs 2 DDP processes (gloo on CPU): the cost of DDP itself, with
  this template's reducer bypass + one flat all-reduce per update;
- 2 processes with and without the pre-backward skip agreement
  (``skip.check_losses``): the cost of the extra tiny collective per update.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from child import run_child

HERE = Path(__file__).resolve().parent

CONFIGS = {
    "1 process": ["trainer=cpu"],
    "2 processes (DDP)": ["trainer=ddp_cpu"],
    "2 processes, no skip agreement": ["trainer=ddp_cpu", "skip.check_losses=false"],
}


def time_run(overrides: list[str], iterations: int, warmup: int, run_dir: Path) -> float:
    env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    command = [
        sys.executable, "-m", "gan_template", "experiment=ring", "model.discriminator.pack=1", f"train.iterations={iterations}",
        "trainer.enable_progress_bar=false", "~callbacks.toy_eval", "+callbacks.timer._target_=timing.IterationTimer", f"+callbacks.timer.warmup={warmup}", "extra_target_prefixes=[timing.]",
        "callbacks.checkpoint.every_n_iterations=0", f"hydra.run.dir={run_dir}", *overrides,
    ]  # fmt: skip
    run_child(command, env)
    return json.loads((run_dir / "timing_rank0.json").read_text())["median_s"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=50, help="iterations not timed")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.iterations <= args.warmup:
        parser.error(f"--iterations {args.iterations} must exceed --warmup {args.warmup}")
    times: dict[str, list[float]] = {name: [] for name in CONFIGS}
    with tempfile.TemporaryDirectory(prefix="ddp_cost_") as root:
        for repeat in range(args.repeats):
            for name, overrides in CONFIGS.items():  # alternate configurations
                slug = "".join(c if c.isalnum() else "_" for c in name)
                run_dir = Path(root) / f"{slug}_{repeat}"
                times[name].append(
                    time_run([*overrides, *args.overrides], args.iterations, args.warmup, run_dir)
                )
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"{'configuration':<34} {'ms / iteration':>15}")
    for name, value in medians.items():
        print(f"{name:<34} {1000 * value:>15.2f}")
    print(
        f"DDP / 1 process:                   {medians['2 processes (DDP)'] / medians['1 process']:.3f}x"
    )
    agreement = medians["2 processes (DDP)"] / medians["2 processes, no skip agreement"]
    print(f"skip agreement (with / without):   {agreement:.3f}x")


if __name__ == "__main__":
    main()

"""The README's BiGAN figure: digits beside their reconstructions G(E(x)), and |x - G(E(x))| over the run.

    # in a project holding docs/extending.md's BiGAN (my_project/bigan.py and its YAML):
    python -m gan_template experiment=bigan seed=0 hydra.run.dir=outputs/bigan
    python benchmarks/bigan_figure.py outputs/bigan --out docs/images/bigan_digits.png

Reads the run's ``last.ckpt`` (networks rebuilt from the config it stores, the
EMA generator as samples use it) and its ``metrics.csv``.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torchvision.utils import make_grid

from gan_template.harness.train import build_module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("bigan_digits.png"))
    parser.add_argument("--n", type=int, default=12, help="digits shown")
    args = parser.parse_args()

    checkpoint = torch.load(args.run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    cfg = OmegaConf.create(checkpoint["hyper_parameters"]["run_config"])
    module = build_module(cfg)
    module.load_state_dict(checkpoint["state_dict"])
    module.eval()
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    dataset = datamodule.evaluation_dataset  # every image, in a fixed order: the first n
    real = torch.stack([dataset[index][0] for index in range(args.n)])
    with torch.no_grad():
        reconstructed = module.sampling_generator(module.networks["encoder"](real))
    grid = make_grid(
        torch.cat([real, reconstructed]), nrow=args.n, normalize=True, value_range=(-1, 1)
    )

    with open(args.run_dir / "metrics.csv") as file:
        rows = [row for row in csv.DictReader(file) if row.get("train/reconstruction")]
    steps = [int(row["step"]) for row in rows]
    errors = [float(row["train/reconstruction"]) for row in rows]

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5.5), height_ratios=[1, 1.3])
    top.imshow(grid.permute(1, 2, 0).numpy())
    top.set_title("digits (top) and G(E(x)) (bottom)")
    top.axis("off")
    bottom.plot(steps, errors, marker=".")
    bottom.set_xlabel("iteration")
    bottom.set_ylabel("|x - G(E(x))| (mean, one batch)")
    bottom.grid(alpha=0.3)
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=110)
    print(
        f"{args.out}: reconstruction error {errors[0]:.3f} at iteration {steps[0]}, {errors[-1]:.3f} at {steps[-1]}"
    )


if __name__ == "__main__":
    main()

"""The tasks' picture for the README: each task beside its baseline, on the same data.

    python benchmarks/tasks_figure.py --pix2pix RUN --l1 RUN --autoencoder RUN \\
        --reconstruction-only RUN --latent-gan RUN --pixel-gan RUN --out docs/images/tasks_digits.png

Rows: pix2pix (held-out inputs | L1 alone | pix2pix | target), the autoencoder
(input | without D | with D), and samples of the latent GAN beside the pixel-space
DCGAN (same seeds of noise). Every run directory is one of ``python -m gan_template``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from hydra.utils import instantiate
from torchvision.utils import make_grid, save_image

from gan_template.sample import load_generator, sample, translate


def held_out(run: Path, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    _, cfg = load_generator(run / "checkpoints" / "last.ckpt")
    data = instantiate(cfg.data)
    data.setup("fit")
    return data.validation_pairs(n)


def outputs(run: Path, inputs: torch.Tensor) -> torch.Tensor:
    generator, _ = load_generator(run / "checkpoints" / "last.ckpt")
    return translate(generator, inputs)


def strip(columns: list[torch.Tensor]) -> torch.Tensor:
    """Columns side by side, one row per image: a grid of len(columns) columns."""
    # Shown at 32 px at least (nearest: the pixels as they are).
    columns = [torch.nn.functional.interpolate(c, scale_factor=max(1, 32 // c.shape[-1]))
               for c in columns]  # fmt: skip
    stacked = torch.stack([c.expand(-1, 3, -1, -1) for c in columns], dim=1).flatten(0, 1)
    return make_grid(stacked, nrow=len(columns), normalize=True, value_range=(-1, 1), pad_value=1)


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("pix2pix", "l1", "autoencoder", "reconstruction-only", "latent-gan", "pixel-gan"):
        parser.add_argument(f"--{name}", type=Path, required=True)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("docs/images/tasks_digits.png"))
    args = parser.parse_args()
    n = args.n
    inputs, targets = held_out(args.pix2pix, n)
    pix2pix = strip([inputs, outputs(args.l1, inputs), outputs(args.pix2pix, inputs), targets])
    images, _ = held_out(args.autoencoder, n)
    autoencoder = strip(
        [images, outputs(args.reconstruction_only, images), outputs(args.autoencoder, images)]
    )
    latent, _ = load_generator(args.latent_gan / "checkpoints" / "last.ckpt")
    pixel, _ = load_generator(args.pixel_gan / "checkpoints" / "last.ckpt")
    samples = [sample(g, 4 * n, seed=0) for g in (pixel, latent)]
    gans = [make_grid(s, nrow=4, normalize=True, value_range=(-1, 1), pad_value=1) for s in samples]
    panels = [pix2pix, autoencoder, *gans]
    height = max(p.shape[1] for p in panels)
    gap = torch.ones(3, height, 8)
    row = [torch.nn.functional.pad(p, (0, 0, 0, height - p.shape[1]), value=1.0) for p in panels]
    figure = torch.cat([x for p in row for x in (p, gap)][:-1], dim=2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_image(figure, args.out)
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()

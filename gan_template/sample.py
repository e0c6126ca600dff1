"""Draw samples from a checkpoint's generator (the EMA generator where there is one).

    python -m gan_template.sample ckpt=PATH n=2500 out=FILE.pt [seed=0] [device=cpu] [ema=true]

Writes a float tensor of shape ``(n, *sample_shape)`` to ``out`` (``torch.load``
reads it back); for image data also a PNG grid beside it (``FILE.png``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from gan_template import nets
from gan_template.ema import recompute_batch_norm
from gan_template.train import build_network

USAGE = "usage: python -m gan_template.sample ckpt=PATH n=2500 out=FILE.pt [seed=0] [device=cpu] [ema=true]"
DEFAULTS = {
    "ckpt": None,
    "n": 2500,
    "out": "samples.pt",
    "seed": 0,
    "device": "cpu",
    "ema": True,
    "batch_size": 1024,
}


def load_generator(
    ckpt_path: str | Path, use_ema: bool = True, device: str = "cpu"
) -> tuple[nn.Module, DictConfig]:
    """The generator of a checkpoint (rebuilt from its stored run config) and that config."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"ckpt={ckpt_path} does not exist; pass a .ckpt from <run dir>/checkpoints/"
        )
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    run_config = (checkpoint.get("hyper_parameters") or {}).get("run_config")
    if not run_config:
        raise ValueError(f"{path} has no run config; was it written by gan_template's training?")
    cfg = OmegaConf.create(run_config)
    generator = build_network(cfg, "generator", checkpoint["gan_template"].get("num_classes", 0))
    state = checkpoint["state_dict"]
    prefix = (
        "generator_ema.module."
        if use_ema and any(k.startswith("generator_ema.") for k in state)
        else "generator."
    )
    generator.load_state_dict(
        {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    )
    generator.to(device)
    if prefix.startswith("generator_ema."):
        # As in training's evaluations: BatchNorm statistics of the averaged weights.
        recompute_batch_norm(generator, int(cfg.ema.get("batch_norm_samples", 2048)))
    return generator.eval(), cfg


def sample(generator: nn.Module, n: int, seed: int = 0, batch_size: int = 1024) -> torch.Tensor:
    """``n`` samples on the CPU, from noise drawn with ``seed``.

    A class-conditional generator gets the classes in turn, so every class is
    represented equally.
    """
    noise = torch.randn(
        n, nets.latent_dim(generator), generator=torch.Generator().manual_seed(seed)
    )
    classes = nets.num_classes(generator)
    labels = torch.arange(n) % classes if classes else None
    return nets.generate(generator, noise, labels, chunk_size=batch_size)


def save_image_grid(samples: torch.Tensor, path: Path, max_images: int = 64) -> None:
    """Images in [-1, 1] (the generators' tanh range) as one PNG grid."""
    from torchvision.utils import save_image

    images = samples[:max_images]
    save_image(images, path, nrow=int(len(images) ** 0.5), normalize=True, value_range=(-1.0, 1.0))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = OmegaConf.merge(OmegaConf.create(DEFAULTS), OmegaConf.from_dotlist(argv or sys.argv[1:]))
    unknown = set(args) - set(DEFAULTS)
    if unknown or args.ckpt is None:
        raise SystemExit(
            f"{'unknown keys ' + str(sorted(unknown)) + '; ' if unknown else ''}{USAGE}"
        )
    if int(args.n) < 1:
        raise SystemExit(f"n={args.n} must be >= 1; {USAGE}")
    generator, cfg = load_generator(args.ckpt, use_ema=bool(args.ema), device=args.device)
    samples = sample(generator, int(args.n), int(args.seed), int(args.batch_size))
    # Toy data may be trained at a reduced scale (data.scale): return original units.
    samples = samples * float(cfg.data.get("scale", 1.0))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(samples, out)
    written = [str(out)]
    if samples.dim() == 4:
        png = out.with_suffix(".png")
        save_image_grid(samples, png)
        written.append(str(png))
    print(f"Wrote {len(samples)} samples of shape {tuple(samples.shape[1:])}: {', '.join(written)}")
    return {"samples": samples, "written": written}


if __name__ == "__main__":
    main()

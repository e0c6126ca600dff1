"""Draw samples from a checkpoint's generator (the EMA generator where there is one).

    python -m gan_template.sample CKPT [--n 2500] [--out samples.pt] [--seed 0]
                                       [--device cpu] [--no-ema]
                                       [--interpolation ROWS] [--steps 10]
    python -m gan_template.sample CKPT --inputs FOLDER [--out outputs.pt]   (image-to-image)

Writes a float tensor of shape ``(n, *sample_shape)`` to ``--out`` (``torch.load``
reads it back); for image data also a PNG grid beside it (``FILE.png``) and,
with ``--interpolation ROWS``, ``FILE_interpolation.png``: ROWS rows, each a
spherical walk of ``--steps`` images between two random latents.
For an image-to-image checkpoint (``task=paired``, ``task=autoencoder``),
``--inputs FOLDER`` translates (or reconstructs) every image of the folder,
resized to the run's resolution: the outputs go to ``--out`` as a tensor, to
``FILE/<image name>.png`` one by one, and to ``FILE.png`` as input | output pairs.
``--help`` lists the options; a bad value exits with status 2 and a message.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from gan_template import models
from gan_template.ema import recompute_batch_norm
from gan_template.harness.checkpoint_io import check_readable
from gan_template.harness.errors import UserInputError
from gan_template.harness.train import build_network


def load_generator(
    ckpt_path: str | Path, use_ema: bool = True, device: str = "cpu"
) -> tuple[nn.Module, DictConfig]:
    """The generator of a checkpoint (rebuilt from its stored run config) and that config."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise UserInputError(
            f"{ckpt_path} does not exist or is not a file; pass a .ckpt from <run dir>/checkpoints/"
        )
    check_readable(path, option="")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    run_config = (checkpoint.get("hyper_parameters") or {}).get("run_config")
    if not run_config or "gan_template" not in checkpoint:
        raise UserInputError(
            f"{path} is not a gan_template checkpoint (it has no stored run config); pass one "
            "from <run dir>/checkpoints/"
        )
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
    if any(k.startswith("sample_decoder.") for k in state):  # a GAN in a latent space
        generator = models.Decoded(generator, latent_decoder(cfg, state).to(device))
    return generator.eval(), cfg


def latent_decoder(cfg: DictConfig, state: dict[str, Any]) -> nn.Module:
    """The decoder a latent GAN's samples go through, with the weights its checkpoint saved.

    Its architecture comes from the autoencoder checkpoint the run read (``data.autoencoder``).
    """
    from gan_template.data.latents import LatentDecoder, load_autoencoder
    from gan_template.harness.errors import DataError

    try:
        network, ae_cfg = load_autoencoder(cfg.data.autoencoder)
    except DataError as error:
        raise UserInputError(f"this latent GAN decodes with its autoencoder: {error}") from None
    prefix = "sample_decoder."
    decoder_state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    image = ae_cfg.data
    shape = (int(image.channels), int(image.resolution), int(image.resolution))
    decoder = LatentDecoder(network, decoder_state["shift"], decoder_state["scale"], shape)
    decoder.load_state_dict(decoder_state)
    return decoder.eval()


def sample(generator: nn.Module, n: int, seed: int = 0, batch_size: int = 1024) -> torch.Tensor:
    """``n`` samples on the CPU, from noise drawn with ``seed``.

    A class-conditional generator gets the classes in turn, so every class is
    represented equally.
    """
    noise = torch.randn(
        n, models.latent_dim(generator), generator=torch.Generator().manual_seed(seed)
    )
    classes = models.num_classes(generator)
    labels = torch.arange(n) % classes if classes else None
    return models.generate(generator, noise, labels, chunk_size=batch_size)


def read_inputs(folder: Path, resolution: int, channels: int) -> tuple[list[Path], torch.Tensor]:
    """Every image file of ``folder`` (sorted), resized to ``resolution``, in [-1, 1]."""
    from torchvision.transforms.functional import pil_to_tensor

    from gan_template.data.images import has_image_extension, load_image

    if not folder.is_dir():
        raise UserInputError(f"--inputs {folder} is not a folder of images")
    files = sorted(p for p in folder.iterdir() if p.is_file() and has_image_extension(str(p)))
    if not files:
        raise UserInputError(f"--inputs {folder} holds no image files (png, jpg, ...)")
    images = []
    for path in files:
        image = load_image(str(path)).convert("L" if channels == 1 else "RGB")
        tensor = pil_to_tensor(image).float().div(127.5).sub(1.0)[None]
        images.append(
            torch.nn.functional.interpolate(
                tensor, size=(resolution, resolution), mode="bilinear", antialias=True
            ).clamp(-1, 1)
        )
    return files, torch.cat(images)


@torch.no_grad()
def translate(generator: nn.Module, inputs: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """An image-to-image generator's outputs (eval mode), as float32 on the CPU."""
    weight = next(generator.parameters())
    return torch.cat(
        [generator(chunk.to(weight.device, weight.dtype)).float().cpu()
         for chunk in inputs.split(batch_size)]
    )  # fmt: skip


def save_image_grid(samples: torch.Tensor, path: Path, max_images: int = 64) -> None:
    """Images in [-1, 1] (the generators' tanh range) as one PNG grid."""
    from torchvision.utils import save_image

    images = samples[:max_images]
    save_image(images, path, nrow=int(len(images) ** 0.5), normalize=True, value_range=(-1.0, 1.0))


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m gan_template.sample",
        description="Draw samples from a gan_template checkpoint's generator.",
    )
    parser.add_argument("ckpt", type=Path, help="a .ckpt from <run dir>/checkpoints/")
    parser.add_argument("--n", type=positive_int, default=2500, help="samples to draw (>= 1)")
    parser.add_argument("--out", type=Path, default=Path("samples.pt"), help="tensor file to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps, ...")
    parser.add_argument("--batch-size", type=positive_int, default=1024)
    parser.add_argument(
        "--no-ema", dest="ema", action="store_false", help="the raw generator, not its EMA"
    )
    parser.add_argument(
        "--interpolation",
        type=positive_int,
        default=None,
        metavar="ROWS",
        help="also write FILE_interpolation.png: ROWS latent walks (image data)",
    )
    parser.add_argument("--steps", type=int, default=10, help="images per walk (>= 2)")
    parser.add_argument(
        "--inputs",
        type=Path,
        default=None,
        metavar="FOLDER",
        help="image-to-image checkpoints: translate (reconstruct) every image of FOLDER",
    )
    positive_int.__name__ = "integer >= 1"  # argparse names the type in its error message
    args = parser.parse_args(argv)
    if args.out.is_dir():
        parser.error(
            f"--out {args.out} is a folder; give a file name such as {args.out / 'samples.pt'}"
        )
    blocking = next((folder for folder in args.out.parents if folder.is_file()), None)
    if blocking is not None:
        parser.error(
            f"--out {args.out}: {blocking} is a file, not a folder; give a path under a folder"
        )
    if args.out.suffix.lower() in IMAGE_SUFFIXES:
        # The grid is written beside the tensor as FILE.png: it would overwrite the tensor.
        parser.error(
            f"--out {args.out} names a picture; --out is the tensor file, and the grid is "
            f"written beside it: give --out {args.out.with_suffix('.pt')} (grid: {args.out.with_suffix('.png')})"
        )
    if args.steps < 2:
        parser.error(f"--steps {args.steps} must be >= 2 (a walk has two ends)")
    if not 0 <= args.seed < 2**63:
        parser.error(f"--seed {args.seed} must be in [0, 2**63)")
    try:
        device = torch.device(args.device)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as error:
        parser.error(f"--device {args.device} cannot be used here ({str(error).splitlines()[0]})")
    return args


#: File name endings of pictures: not a name for the tensor file (``--out``).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv if argv is not None else sys.argv[1:])
    try:
        generator, cfg = load_generator(args.ckpt, use_ema=args.ema, device=args.device)
    except UserInputError as error:
        print(f"gan_template.sample: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    translates = getattr(generator, "latent_dim", None) is None
    if translates != (args.inputs is not None):
        print(
            "gan_template.sample: error: "
            + (
                f"{args.ckpt} translates images ({cfg.module._target_.rsplit('.', 1)[-1]}); "
                "give --inputs FOLDER"
                if translates
                else f"--inputs: {args.ckpt} generates from noise; drop --inputs"
            ),
            file=sys.stderr,
        )
        raise SystemExit(2)
    if translates:
        return translate_folder(generator, cfg, args)
    samples = sample(generator, args.n, args.seed, args.batch_size)
    # Toy data may be trained at a reduced scale (data.scale): return original units.
    samples = samples * float(cfg.data.get("scale", 1.0))
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(samples, out)
    written = [str(out)]
    if samples.dim() == 4:
        png = out.with_suffix(".png")
        save_image_grid(samples, png)
        written.append(str(png))
        if args.interpolation:
            from gan_template.callbacks.sample_grid import save_interpolation

            walks = out.with_name(f"{out.stem}_interpolation.png")
            save_interpolation(generator, walks, args.interpolation, args.steps, args.seed)
            written.append(str(walks))
    elif args.interpolation:
        print("gan_template.sample: --interpolation draws images; this generator's samples are not")
    print(f"Wrote {len(samples)} samples of shape {tuple(samples.shape[1:])}: {', '.join(written)}")
    return {"samples": samples, "written": written}


def translate_folder(
    generator: nn.Module, cfg: DictConfig, args: argparse.Namespace
) -> dict[str, Any]:
    """``--inputs``: every image of the folder through an image-to-image generator."""
    from torchvision.utils import save_image

    in_channels = int(getattr(generator, "in_channels", cfg.data.channels))
    try:
        files, inputs = read_inputs(args.inputs, int(cfg.data.resolution), in_channels)
    except UserInputError as error:
        print(f"gan_template.sample: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    outputs = translate(generator, inputs, args.batch_size)
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(outputs, out)
    folder = out.with_suffix("")
    folder.mkdir(exist_ok=True)
    for path, image in zip(files, outputs, strict=True):
        save_image(image, folder / f"{path.stem}.png", normalize=True, value_range=(-1.0, 1.0))
    channels = max(inputs.shape[1], outputs.shape[1])
    pairs = torch.stack([inputs[:32].expand(-1, channels, -1, -1),
                         outputs[:32].expand(-1, channels, -1, -1)], dim=1).flatten(0, 1)  # fmt: skip
    save_image(pairs, out.with_suffix(".png"), nrow=8, normalize=True, value_range=(-1.0, 1.0))
    written = [str(out), f"{folder}/", str(out.with_suffix(".png"))]
    print(f"Translated {len(outputs)} images of {args.inputs}: {', '.join(written)}")
    return {"samples": outputs, "written": written}


if __name__ == "__main__":
    main()

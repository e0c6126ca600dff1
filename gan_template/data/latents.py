"""A dataset's latents under a frozen autoencoder: the data of a GAN in latent space.

GAT (Hyun et al., 2025) trains a GAN on a frozen VAE's latents. Here
``data=latents data.autoencoder=<a task=autoencoder checkpoint>`` encodes the
image dataset the autoencoder was trained on (its run config says which, at
which size) once, with the posterior's mean, and caches the latents on disk
under a name made of the checkpoint's content hash and the data's fingerprint:
a retrained checkpoint (same path, new weights) is encoded afresh. The latents
are standardised per channel into [-1, 1] (the generators end in tanh); the
decoder (:class:`LatentDecoder`) undoes that and decodes, and the harness gives
it to the module as a frozen network, so sample grids, FID/KID/precision/recall
and ``gan_template.sample`` see images, measured against the real images as
for every other run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from gan_template.data.images import ImageDataModule
from gan_template.data.sampling import train_dataloader_of
from gan_template.harness.checkpoint_io import write_atomically
from gan_template.harness.errors import DataError

#: Bumped when the encoding changes, so that older caches are not read.
CACHE_VERSION = 1


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def load_autoencoder(checkpoint: str | Path) -> tuple[nn.Module, Any]:
    """The autoencoder network of a ``task=autoencoder`` checkpoint and that run's config."""
    from gan_template.harness.train import build_network

    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise DataError(
            f"data.autoencoder={checkpoint}: no such checkpoint. Train the autoencoder first "
            "(python -m gan_template experiment=autoencoder_digits) and pass its "
            "<run dir>/checkpoints/last.ckpt"
        )
    state = torch.load(path, map_location="cpu", weights_only=False)
    run_config = (state.get("hyper_parameters") or {}).get("run_config")
    if not run_config:
        raise DataError(f"data.autoencoder={checkpoint}: not a gan_template checkpoint")
    cfg = OmegaConf.create(run_config)
    network = build_network(cfg, "generator")
    if not all(callable(getattr(network, m, None)) for m in ("encode", "decode")):
        raise DataError(
            f"data.autoencoder={checkpoint}: its generator ({type(network).__name__}) is not an "
            "autoencoder (no encode/decode); pass a checkpoint of task=autoencoder"
        )
    network.load_state_dict(
        {k.removeprefix("generator."): v for k, v in state["state_dict"].items()
         if k.startswith("generator.")}
    )  # fmt: skip
    return network.eval().requires_grad_(False), cfg


class LatentDecoder(nn.Module):
    """Standardised latents -> images: undoes the per-channel standardisation, then decodes."""

    shift: Tensor
    scale: Tensor

    def __init__(
        self, decoder: nn.Module, shift: Tensor, scale: Tensor, image_shape: tuple[int, ...]
    ) -> None:
        super().__init__()
        self.decoder = decoder
        self.register_buffer("shift", shift.view(1, -1, 1, 1).clone())
        self.register_buffer("scale", scale.view(1, -1, 1, 1).clone())
        self.sample_shape = tuple(image_shape)

    def forward(self, latents: Tensor) -> Tensor:
        decode: Any = self.decoder.decode  # an autoencoder's (load_autoencoder checks it)
        return decode(latents * self.scale + self.shift).clamp(-1.0, 1.0)


class LatentDataModule(L.LightningDataModule):
    """The latents of an autoencoder checkpoint's dataset, standardised into [-1, 1].

    Args:
        autoencoder: a ``task=autoencoder`` checkpoint; its run config names the
            dataset (and size) encoded.
        channels, resolution: the latents' shape, which the networks read
            (``${data.channels}``); checked against the autoencoder's.
        batch_size, data_seed, limit, num_workers, pin_memory: as for images.
        cache_dir: where encoded latents are kept (default ``$GAN_TEMPLATE_CACHE``
            or ``~/.cache/gan_template``).
        root: the image data's folder, when the autoencoder's run read one.
    """

    def __init__(
        self,
        autoencoder: str,
        channels: int = 4,
        resolution: int = 8,
        batch_size: int = 64,
        data_seed: int = 0,
        limit: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        cache_dir: str | None = None,
        root: str | None = None,
    ) -> None:
        super().__init__()
        from gan_template.metrics.extractors import default_cache_dir

        self.autoencoder_path = Path(autoencoder).expanduser()
        network, ae_cfg = load_autoencoder(autoencoder)
        latent_shape = tuple(getattr(network, "latent_shape", ()))
        if latent_shape != (channels, resolution, resolution):
            raise DataError(
                f"data.channels={channels}, data.resolution={resolution}: the autoencoder's "
                f"latents ({autoencoder}) have shape {latent_shape}; set data.channels="
                f"{latent_shape[0]} data.resolution={latent_shape[-1]}"
            )
        self.network = network
        image = ae_cfg.data
        self.images = ImageDataModule(
            name=str(image.name),
            root=str(root if root is not None else image.get("root", "data")),
            resolution=int(image.resolution),
            channels=int(image.channels),
            batch_size=batch_size,
            data_seed=data_seed,
        )
        self.name = f"{image.name}_latents"
        self.channels, self.resolution = channels, resolution
        self.sample_shape = latent_shape
        self.image_shape = (int(image.channels), int(image.resolution), int(image.resolution))
        self.num_classes = self.images.num_classes
        self.batch_size = batch_size
        self.batches_per_iteration = 1  # set by the harness from the module's updates
        self.data_seed = data_seed
        if limit is not None and limit < 1:
            raise ValueError(f"data.limit={limit} must be >= 1 (or null: every image)")
        self.limit = limit
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.dataset: TensorDataset | None = None
        self.evaluation_dataset: TensorDataset | None = None
        self._decoder: LatentDecoder | None = None

    # ---- encoding, once ------------------------------------------------------------------

    def cache_path(self, images: Tensor) -> Path:
        from gan_template.metrics.extractors import data_fingerprint

        fingerprint = data_fingerprint(images, torch.zeros(0, dtype=torch.long))
        name = f"latents_v{CACHE_VERSION}_{file_hash(self.autoencoder_path)}_{fingerprint}.pt"
        return self.cache_dir / name

    def encoded(self) -> dict[str, Tensor]:
        """``{latents, labels, shift, scale}``: from the cache, or encoded now and cached."""
        self.images.setup("fit")
        images, labels = self.images.real_samples(len(self.images.evaluation_dataset))  # type: ignore[arg-type]
        path = self.cache_path(images)
        if path.is_file():
            return torch.load(path, map_location="cpu", weights_only=True)
        with torch.no_grad():
            encode: Any = self.network.encode
            raw = torch.cat([encode(chunk)[0] for chunk in images.split(256)])
        shift = raw.mean(dim=(0, 2, 3))
        scale = (raw - shift.view(1, -1, 1, 1)).abs().amax(dim=(0, 2, 3)).clamp_min(1e-6)
        latents = (raw - shift.view(1, -1, 1, 1)) / scale.view(1, -1, 1, 1)
        result = {"latents": latents, "labels": labels, "shift": shift, "scale": scale}
        write_atomically(path, lambda file: torch.save(result, file))
        return result

    @property
    def decoder(self) -> LatentDecoder:
        """Standardised latents -> images (frozen); the module decodes its samples with it."""
        if self._decoder is None:
            encoded = self.encoded()
            self._decoder = LatentDecoder(
                self.network, encoded["shift"], encoded["scale"], self.image_shape
            )
        return self._decoder

    # ---- serving ---------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        if self.dataset is not None:
            return
        encoded = self.encoded()
        full = TensorDataset(encoded["latents"], encoded["labels"])
        self.evaluation_dataset = full
        if self.limit is None:
            self.dataset = full
        else:
            if self.limit > len(full):
                raise DataError(f"data.limit={self.limit} is more than the {len(full)} latents")
            generator = torch.Generator().manual_seed(self.data_seed)
            chosen = torch.randperm(len(full), generator=generator)[: self.limit].sort().values
            self.dataset = TensorDataset(*(t[chosen] for t in full.tensors))

    def train_dataloader(self) -> DataLoader:
        return train_dataloader_of(self)

    def real_samples(self, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
        """``n`` real *images* and labels: evaluations compare decoded samples with these."""
        return self.images.real_samples(n, seed)

    def real_batches(
        self, n: int | None, seed: int = 0, batch_size: int = 500
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """The real *images*, a batch at a time (``ImageDataModule.real_batches``)."""
        return self.images.real_batches(n, seed, batch_size)

    def real_fingerprint(self, n: int | None, seed: int = 0) -> str:
        return self.images.real_fingerprint(n, seed)

"""Image data: an embedded default dataset and the torchvision datasets users expect.

``digits`` (the default) is scikit-learn's copy of the UCI optical handwritten
digits (Alpaydin & Kaynak, 1998): 1,797 grey 8x8 images of the digits 0-9 with
labels, shipped inside scikit-learn, so it needs no download. It is upsampled
(bilinear, antialiased) to ``resolution``. ``colour_digits`` draws each of them
in a colour of its own on a background of its own (RGB): a second offline set.

The torchvision datasets (``mnist``, ``fashion_mnist``, ``cifar10``, ``celeba``)
read torchvision's on-disk layout under ``root`` and download there only with
``download=true``; ``folder`` reads ``root/<class>/<image>`` (torchvision's
``ImageFolder``: the subfolders are the classes).

Every image is resized and centre-cropped to ``resolution``, converted to
``channels`` (1: grey, 3: RGB) and scaled to [-1, 1], the generators' tanh range.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from gan_template.data.sampling import train_dataloader_of
from gan_template.harness.errors import DataError

TORCHVISION_DATASETS = ("mnist", "fashion_mnist", "cifar10", "celeba")
DATASETS = ("digits", "colour_digits", *TORCHVISION_DATASETS, "folder")
MAX_UNREADABLE_FRACTION = 0.1
NUM_CLASSES = {
    "digits": 10,
    "colour_digits": 10,
    "mnist": 10,
    "fashion_mnist": 10,
    "cifar10": 10,
    "celeba": 0,
}


def load_digits_tensor(resolution: int, channels: int) -> tuple[Tensor, Tensor]:
    """scikit-learn's digits as ``(images in [-1, 1] of shape (n, channels, res, res), labels)``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    images = F.interpolate(images, size=(resolution, resolution), mode="bilinear", antialias=True)
    images = images.clamp(0, 1).mul(2).sub(1).expand(-1, channels, -1, -1).contiguous()
    return images, torch.as_tensor(digits.target, dtype=torch.long)


def load_colour_digits_tensor(resolution: int) -> tuple[Tensor, Tensor]:
    """The digits, each in a colour of its own on a darker background of its own (RGB, in [-1, 1]).

    A second offline dataset with labels, for checking that recipes tuned on the
    grey digits hold elsewhere: the generator must now also cover a spread of
    colours. The ink is drawn from [0.5, 1]^3 and the background from [0, 0.5]^3
    (the digit stays readable, so the offline classifier still scores it), one
    pair per image, fixed (seed 0), so every run sees the same data.
    """
    images, labels = load_digits_tensor(resolution, 1)
    ink = (images + 1) / 2
    generator = torch.Generator().manual_seed(0)
    foreground = 0.5 + 0.5 * torch.rand(len(images), 3, 1, 1, generator=generator)
    background = 0.5 * torch.rand(len(images), 3, 1, 1, generator=generator)
    coloured = background + (foreground - background) * ink
    return coloured.mul(2).sub(1).contiguous(), labels


#: Pillow modes of 16-bit images, read as 0..65535 (and "I", which 16-bit PNGs may open as).
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def load_image(path: str) -> Any:
    """Open and decode an image file, upright; 16-bit images are scaled to 8 bits, not clipped.

    A JPEG's EXIF orientation (how a phone says it was held) is applied, as
    image viewers do; Pillow alone leaves the pixels as stored, sideways. An
    animated GIF gives its first frame. Pillow's own conversion of a 16-bit
    image to ``L``/``RGB`` clips every value above 255 (nearly all of them) to
    white. Decoding here, not lazily, makes a truncated file fail now, with its
    name, rather than inside a loader worker.
    """
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as opened:
            opened.load()  # the first frame of an animation
            image = ImageOps.exif_transpose(opened)
            if image.mode in SIXTEEN_BIT_MODES:
                array = np.asarray(image, dtype=np.float64)
                return Image.fromarray(np.round(array.clip(0, 65535) / 257).astype(np.uint8))
            return image.copy() if image is opened else image  # a new image, or the file's
    except (OSError, ValueError, SyntaxError) as error:  # what Pillow raises for broken files
        raise DataError(f"{path}: cannot be decoded as an image ({error})") from error


def has_image_extension(path: str) -> bool:
    """torchvision's image extensions, and GIF (its first frame), which ``ImageFolder`` skips."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

    return has_file_allowed_extension(path, (*IMG_EXTENSIONS, ".gif"))


class DecodableImage:
    """``ImageFolder``'s ``is_valid_file``: an image file that decodes; remembers those that do not."""

    def __init__(self) -> None:
        self.unreadable: list[str] = []

    def __call__(self, path: str) -> bool:
        if not has_image_extension(path):
            return False
        try:
            load_image(path)
        except DataError:
            self.unreadable.append(path)
            return False
        return True


class _WithoutLabels(Dataset):
    """Yields ``(image, 0)`` for datasets whose targets are not classes (CelebA's attributes)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.dataset[index][0], 0


class ImageDataModule(L.LightningDataModule):
    """Images in [-1, 1] with integer labels, served in shuffled per-rank batches.

    Args:
        name: one of ``digits``, ``colour_digits``, ``mnist``, ``fashion_mnist``, ``cifar10``, ``celeba``, ``folder``.
        root: where the torchvision datasets live (or the image folder for ``folder``).
        resolution: image side in pixels (a power of two for the networks here).
        channels: 1 (grey) or 3 (RGB); images are converted as needed.
        batch_size: images per discriminator update.
        download: let torchvision download the dataset into ``root`` (needs internet).
        num_workers, pin_memory: DataLoader settings for file-backed datasets.
        data_seed: seed of the shuffling order.
        verify_images: for ``folder``, decode every file once at start-up: unreadable
            ones (corrupt, truncated) are skipped with a warning naming them (an
            error if more than ``MAX_UNREADABLE_FRACTION`` of the folder), instead
            of stopping a loader worker mid-run. Off: a bad file stops the run
            when it is drawn, with its name.
    """

    def __init__(
        self,
        name: str = "digits",
        root: str = "data",
        resolution: int = 16,
        channels: int = 1,
        batch_size: int = 64,
        download: bool = False,
        num_workers: int = 0,
        pin_memory: bool = False,
        data_seed: int = 0,
        verify_images: bool = True,
        limit: int | None = None,
    ) -> None:
        super().__init__()
        if name not in DATASETS:
            raise ValueError(
                f"data.name={name!r} is not an image dataset; choose one of {list(DATASETS)}"
            )
        if channels not in (1, 3):
            raise ValueError(f"data.channels={channels} must be 1 (grey) or 3 (RGB)")
        if name == "colour_digits" and channels != 3:
            raise ValueError(
                f"data.channels={channels}: data.name=colour_digits is RGB; set data.channels=3 "
                "(or use data=colour_digits, which does)"
            )
        self.name = name
        self.root = Path(root).expanduser()
        self.resolution = resolution
        self.channels = channels
        self.batch_size = batch_size
        #: Real batches per training step, one per discriminator update: set by the harness
        #: from the module's updates (``GANModule.batches_per_iteration``).
        self.batches_per_iteration = 1
        self.download = download
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.data_seed = data_seed
        self.verify_images = verify_images
        if limit is not None and limit < 1:
            raise ValueError(f"data.limit={limit} must be >= 1 (or null: every image)")
        self.limit = limit
        self.unreadable_files: list[str] = []
        self.sample_shape: tuple[int, ...] = (channels, resolution, resolution)
        self.num_classes = NUM_CLASSES.get(name, 0)
        if name == "folder" and self.root.is_dir():
            # Known before setup() so conditional networks can be sized at start-up.
            self.num_classes = sum(1 for p in self.root.iterdir() if p.is_dir())
        self.dataset: Dataset | None = None  # what training draws from (``limit`` images)
        self.evaluation_dataset: Dataset | None = None  # every image: metrics compare with it

    # ---- building the dataset ------------------------------------------------------------

    def prepare_data(self) -> None:
        if self.download and self.name in TORCHVISION_DATASETS:
            self._torchvision_dataset()  # downloads once, on one process

    def setup(self, stage: str) -> None:
        if self.dataset is not None:
            return
        if self.name == "digits":
            dataset: Dataset = TensorDataset(*load_digits_tensor(self.resolution, self.channels))
        elif self.name == "colour_digits":
            dataset = TensorDataset(*load_colour_digits_tensor(self.resolution))
        elif self.name == "folder":
            dataset = self._image_folder()
        else:
            dataset = self._torchvision_dataset()
        self.evaluation_dataset = dataset
        self.dataset = dataset if self.limit is None else self._subset(dataset, self.limit)

    def _subset(self, dataset: Dataset, limit: int) -> Dataset:
        """``limit`` images of ``dataset``, chosen by ``data_seed`` (the same ones every run)."""
        count = len(dataset)  # type: ignore[arg-type]
        if limit > count:
            raise DataError(
                f"data.limit={limit} is more than the {count} images of data.name={self.name}"
            )
        generator = torch.Generator().manual_seed(self.data_seed)
        chosen = torch.randperm(count, generator=generator)[:limit].sort().values
        if isinstance(dataset, TensorDataset):  # stays in memory, indexed by tensors
            return TensorDataset(*(tensor[chosen] for tensor in dataset.tensors))
        return Subset(dataset, chosen.tolist())

    def transform(self) -> Any:
        from torchvision import transforms as T
        from torchvision.transforms import v2

        # Library transforms only: a lambda here cannot be pickled into loader
        # workers under spawn/forkserver (macOS, Windows, Python 3.14's Linux default).
        return T.Compose(
            [
                T.Grayscale(1) if self.channels == 1 else v2.RGB(),
                T.Resize(self.resolution, antialias=True),
                T.CenterCrop(self.resolution),
                T.ToTensor(),
                T.Normalize([0.5] * self.channels, [0.5] * self.channels),
            ]
        )

    def _torchvision_dataset(self) -> Dataset:
        from torchvision import datasets

        kwargs = {"root": str(self.root), "transform": self.transform(), "download": self.download}
        try:
            if self.name == "mnist":
                return datasets.MNIST(train=True, **kwargs)
            if self.name == "fashion_mnist":
                return datasets.FashionMNIST(train=True, **kwargs)
            if self.name == "cifar10":
                return datasets.CIFAR10(train=True, **kwargs)
            return _WithoutLabels(datasets.CelebA(split="train", target_type=[], **kwargs))
        except RuntimeError as error:
            if self.download:
                raise
            raise DataError(
                f"data.name={self.name}: no usable dataset files under data.root={self.root} "
                f"({error}). Set data.download=true to fetch it (needs internet), or point "
                "data.root at the folder that holds torchvision's layout for it"
            ) from error

    def _image_folder(self) -> Dataset:
        from torchvision.datasets import ImageFolder

        if not self.root.is_dir():
            raise DataError(
                f"data.root={self.root} does not exist; set data.root to a folder of images "
                "laid out as <root>/<class name>/<image file> (one subfolder is fine)"
            )
        checker = DecodableImage() if self.verify_images else None
        try:
            dataset = ImageFolder(
                str(self.root),
                transform=self.transform(),
                loader=load_image,
                is_valid_file=checker or has_image_extension,
            )
        except FileNotFoundError as error:
            if checker is None or not checker.unreadable:
                raise DataError(
                    f"data.root={self.root} holds no images in class subfolders ({error}); put "
                    "the images in <root>/<class name>/ (jpg, png, ...)"
                ) from error
            dataset = None
        unreadable = checker.unreadable if checker is not None else []
        total = len(unreadable) + (len(dataset.samples) if dataset is not None else 0)
        if unreadable:
            self._report_unreadable(unreadable, total)
        assert dataset is not None
        self.num_classes = len(dataset.classes)
        return dataset

    def _report_unreadable(self, unreadable: list[str], total: int) -> None:
        names = ", ".join(unreadable[:10]) + (
            f" and {len(unreadable) - 10} more" if len(unreadable) > 10 else ""
        )
        if len(unreadable) > MAX_UNREADABLE_FRACTION * total:
            raise DataError(
                f"data.root={self.root}: {len(unreadable)} of {total} image files cannot be "
                f"read ({names}); fix or remove them, or point data.root at the right folder"
            )
        warnings.warn(
            f"skipping {len(unreadable)} unreadable image file(s) under data.root={self.root}: {names}",
            stacklevel=3,
        )
        self.unreadable_files = unreadable

    # ---- serving it ---------------------------------------------------------------------

    def train_dataloader(self) -> DataLoader:
        return train_dataloader_of(self)

    def real_samples(self, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
        """``n`` real images and labels (fixed by ``seed``), for metrics.

        Drawn from every image, also when training sees only ``limit`` of them:
        quality is measured against the data distribution, not the subset.
        """
        batches = list(self.real_batches(n, seed, batch_size=max(1, n)))
        return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])

    def real_batches(
        self, n: int | None, seed: int = 0, batch_size: int = 500
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """``real_samples(n, seed)`` a batch at a time, read as they are used (None: every image).

        What the evaluation of 50,000 samples against a whole folder streams
        through its feature extractor in bounded memory (``metrics/protocol.py``).
        """
        dataset = self.evaluation_dataset
        assert dataset is not None, "setup() must run first"
        count = len(dataset)  # type: ignore[arg-type]
        order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
        indices = order if n is None else order[: min(n, count)]
        if isinstance(dataset, TensorDataset):
            images, labels = dataset.tensors
            for chunk in indices.split(batch_size):
                yield images[chunk], labels[chunk]
            return
        subset = Subset(dataset, indices.tolist())
        for images, labels in DataLoader(subset, batch_size, num_workers=self.num_workers):
            yield images, torch.as_tensor(labels, dtype=torch.long)

    def real_fingerprint(self, n: int | None, seed: int = 0) -> str:
        """A short hash of what ``real_batches(n, seed)`` yields, cheap to compute.

        Its size and shape, the files' names, sizes and modification times (an
        image folder), and 256 of the images themselves: a cached reference is
        reused only for the same data.
        """
        dataset = self.evaluation_dataset
        assert dataset is not None, "setup() must run first"
        digest = hashlib.sha1(
            f"{self.name} {len(dataset)} {n} {seed} {self.sample_shape}".encode()  # type: ignore[arg-type]
        )
        for path, label in getattr(dataset, "samples", None) or []:  # ImageFolder's files
            stat = os.stat(path)
            digest.update(f"{path} {label} {stat.st_size} {stat.st_mtime_ns}".encode())
        images, labels = next(self.real_batches(256, seed=1_234_567, batch_size=256))
        digest.update(images.contiguous().numpy().tobytes())
        digest.update(labels.numpy().tobytes())
        return digest.hexdigest()[:16]

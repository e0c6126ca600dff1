"""Paired images (input, target) for image-to-image tasks.

``folder`` reads pix2pix's layout, which users of paired data already have:
``root/train/*.jpg`` and ``root/val/*.jpg`` (``test/`` is not read), each file
holding the two images side by side, A on the left and B on the right;
``direction`` says which side is the input. Each half is resized to
``resolution``.

``digits`` makes pairs from the embedded handwritten digits, offline: the
target is the digit, the input the digit with its lower half masked (grey) by
default. The masked half is ambiguous (the top of a 3 is also the top of a 9),
so the best L1 output is a blurred mean of the possible completions, and a
sharp, plausible one is exactly what the adversarial term adds: the task shows
what pix2pix buys over regression. ``corruption=none`` gives (digit, digit),
the autoencoder's pairs. A held-out ``validation`` fraction of the digits
(chosen by ``data_seed``) is the evaluation split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from gan_template.data.images import (
    NUM_CLASSES,
    has_image_extension,
    load_digits_tensor,
    load_image,
)
from gan_template.data.sampling import train_dataloader_of
from gan_template.harness.errors import DataError

CORRUPTIONS = ("mask_bottom", "mask_right", "none")


def corrupt(images: Tensor, corruption: str, masked_fraction: float = 0.5) -> Tensor:
    """The input of each pair: ``images`` with their bottom (right) ``masked_fraction`` masked
    to grey (0), or unchanged."""
    if corruption == "none":
        return images.clone()
    masked = images.clone()
    side = images.shape[-1] - round(images.shape[-1] * masked_fraction)
    if corruption == "mask_bottom":
        masked[..., side:, :] = 0.0
    elif corruption == "mask_right":
        masked[..., :, side:] = 0.0
    else:
        raise ValueError(f"corruption={corruption!r}: must be one of {list(CORRUPTIONS)}")
    return masked


class SideBySidePairs(Dataset):
    """pix2pix's aligned files: each is A | B side by side; yields ``(input, target)`` in [-1, 1]."""

    def __init__(
        self, files: list[Path], resolution: int, channels: int, in_channels: int, b_to_a: bool
    ) -> None:
        self.files = files
        self.resolution = resolution
        self.channels = channels
        self.in_channels = in_channels
        self.b_to_a = b_to_a

    def __len__(self) -> int:
        return len(self.files)

    def half(self, image: Any, box: tuple[int, int, int, int], channels: int) -> Tensor:
        from torchvision.transforms.functional import pil_to_tensor

        part = image.crop(box).convert("L" if channels == 1 else "RGB")
        tensor = pil_to_tensor(part).float().div(127.5).sub(1.0)[None]
        size = (self.resolution, self.resolution)
        return F.interpolate(tensor, size=size, mode="bilinear", antialias=True)[0].clamp(-1, 1)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        path = self.files[index]
        image = load_image(str(path))
        check_side_by_side(path, image.size)
        width, height = image.size
        left, right = (0, 0, width // 2, height), (width // 2, 0, width, height)
        source, target = (right, left) if self.b_to_a else (left, right)
        return self.half(image, source, self.in_channels), self.half(image, target, self.channels)


def check_side_by_side(path: Path, size: tuple[int, int]) -> None:
    """Refuse a file that cannot be two equal square halves (A | B), naming it and the fix."""
    width, height = size
    if width % 2:
        raise DataError(
            f"{path}: {width}x{height} pixels: the A and B halves differ in size (an odd width). "
            "A paired file holds A and B side by side, each the same size (pix2pix's layout: "
            "2N x N); crop or pad it to an even width"
        )
    if abs(width // 2 - height) > max(2, height // 50):
        raise DataError(
            f"{path}: {width}x{height} pixels is not two square images side by side (A | B, "
            f"each {height}x{height}, so {2 * height}x{height}). Is this an unpaired folder? "
            "Paired data (data=paired_folder) needs pix2pix's aligned files; for a folder of "
            "single images train a noise-to-image recipe with data=folder"
        )


class PairedImageDataModule(L.LightningDataModule):
    """(input, target) image pairs in [-1, 1], served in shuffled per-rank batches.

    Args:
        name: ``digits`` (offline pairs of the embedded digits) or ``folder`` (pix2pix's layout).
        root: the folder holding ``train/`` and ``val/`` (``folder``).
        direction: ``AtoB`` (the left half is the input) or ``BtoA``.
        corruption: how a digit becomes its input (``digits``): ``mask_bottom``,
            ``mask_right`` or ``none`` (an autoencoder's pairs).
        masked_fraction: the fraction of the rows (columns) masked.
        resolution: image side in pixels.
        channels: channels of the target (B); ``in_channels`` of the input (default the same).
        batch_size: pairs per update.
        validation: the held-out fraction of the digits (``folder`` reads ``val/``).
        limit: train on this many pairs (chosen by ``data_seed``).
    """

    def __init__(
        self,
        name: str = "digits",
        root: str = "data",
        direction: str = "AtoB",
        corruption: str = "mask_bottom",
        masked_fraction: float = 0.5,
        resolution: int = 16,
        channels: int = 1,
        in_channels: int | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
        data_seed: int = 0,
        validation: float = 0.15,
        limit: int | None = None,
    ) -> None:
        super().__init__()
        if name not in ("digits", "folder"):
            raise ValueError(f"data.name={name!r}: paired data is 'digits' or 'folder'")
        if direction not in ("AtoB", "BtoA"):
            raise ValueError(f"data.direction={direction!r}: must be 'AtoB' or 'BtoA'")
        if corruption not in CORRUPTIONS:
            raise ValueError(f"data.corruption={corruption!r}: must be one of {list(CORRUPTIONS)}")
        if channels not in (1, 3) or (in_channels or channels) not in (1, 3):
            raise ValueError(f"data.channels={channels}, data.in_channels={in_channels}: 1 or 3")
        if not 0 < masked_fraction < 1:
            raise ValueError(f"data.masked_fraction={masked_fraction}: a fraction in (0, 1)")
        if not 0 < validation < 1:
            raise ValueError(f"data.validation={validation}: a fraction in (0, 1)")
        if limit is not None and limit < 1:
            raise ValueError(f"data.limit={limit} must be >= 1 (or null: every pair)")
        self.name = name
        self.root = Path(root).expanduser()
        self.direction = direction
        self.corruption = corruption
        self.masked_fraction = masked_fraction
        self.resolution = resolution
        self.channels = channels
        self.in_channels = in_channels or channels
        self.batch_size = batch_size
        self.batches_per_iteration = 1  # set by the harness from the module's updates
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.data_seed = data_seed
        self.validation = validation
        self.limit = limit
        #: One target; ``input_shape`` is one input.
        self.sample_shape = (channels, resolution, resolution)
        self.input_shape = (self.in_channels, resolution, resolution)
        self.num_classes = NUM_CLASSES["digits"] if name == "digits" else 0
        self.dataset: Dataset | None = None
        self.validation_dataset: Dataset | None = None
        self.evaluation_dataset: Dataset | None = None  # the targets' classifier trains on these

    def setup(self, stage: str) -> None:
        if self.dataset is not None:
            return
        if self.name == "digits":
            train, held_out = self._digit_pairs()  # type: Dataset, Dataset
        else:
            train, held_out = self._folder_split("train"), self._folder_split("val")
        self.evaluation_dataset = train
        self.validation_dataset = held_out
        self.dataset = train if self.limit is None else self._subset(train, self.limit)

    def _digit_pairs(self) -> tuple[TensorDataset, TensorDataset]:
        images, labels = load_digits_tensor(self.resolution, self.channels)
        inputs = corrupt(images, self.corruption, self.masked_fraction)
        if self.in_channels != self.channels:
            inputs = inputs.mean(1, keepdim=True).expand(-1, self.in_channels, -1, -1).contiguous()
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.data_seed))
        cut = round(len(images) * self.validation)
        held, train = order[:cut].sort().values, order[cut:].sort().values
        return (
            TensorDataset(inputs[train], images[train], labels[train]),
            TensorDataset(inputs[held], images[held], labels[held]),
        )

    def _folder_split(self, split: str) -> SideBySidePairs:
        from PIL import Image

        folder = self.root / split
        if not folder.is_dir():
            raise DataError(
                f"data.root={self.root}: no {split}/ folder. Paired data is pix2pix's layout: "
                f"<root>/train/*.jpg and <root>/val/*.jpg, each file A | B side by side; set "
                "data.root to the folder that holds train/ and val/"
            )
        files = sorted(p for p in folder.iterdir() if p.is_file() and has_image_extension(str(p)))
        if not files:
            raise DataError(f"data.root={self.root}: {folder} holds no image files")
        for path in files:  # the header only: sizes, no decoding
            try:
                with Image.open(path) as image:
                    size = image.size
            except OSError as error:
                raise DataError(f"{path}: cannot be read as an image ({error})") from error
            check_side_by_side(path, size)
        return SideBySidePairs(
            files, self.resolution, self.channels, self.in_channels, self.direction == "BtoA"
        )

    def _subset(self, dataset: Dataset, limit: int) -> Dataset:
        count = len(dataset)  # type: ignore[arg-type]
        if limit > count:
            raise DataError(f"data.limit={limit} is more than the {count} training pairs")
        chosen = torch.randperm(count, generator=torch.Generator().manual_seed(self.data_seed))
        chosen = chosen[:limit].sort().values
        if isinstance(dataset, TensorDataset):
            return TensorDataset(*(tensor[chosen] for tensor in dataset.tensors))
        return torch.utils.data.Subset(dataset, chosen.tolist())

    def train_dataloader(self) -> DataLoader:
        return train_dataloader_of(self)

    def validation_pairs(self, n: int | None = None) -> tuple[Tensor, Tensor]:
        """The first ``n`` held-out pairs (all: None), as ``(inputs, targets)``."""
        dataset = self.validation_dataset
        assert dataset is not None, "setup() must run first"
        count = len(dataset) if n is None else min(n, len(dataset))  # type: ignore[arg-type]
        if isinstance(dataset, TensorDataset):
            return dataset.tensors[0][:count], dataset.tensors[1][:count]
        items = [dataset[i] for i in range(count)]
        return torch.stack([a for a, *_ in items]), torch.stack([b for _, b, *_ in items])

    def real_samples(self, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
        """``n`` training targets and their labels (the offline classifier's data)."""
        dataset = self.evaluation_dataset
        assert isinstance(dataset, TensorDataset), "labelled targets: the digits only"
        count = len(dataset)
        chosen = torch.randperm(count, generator=torch.Generator().manual_seed(seed))[
            : min(n, count)
        ]
        return dataset.tensors[1][chosen], dataset.tensors[2][chosen]

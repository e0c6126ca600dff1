"""Every image dataset loads from files written here in torchvision's on-disk layout (no download)."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gan_template.data.images import ImageDataModule

N = 40  # images per fake dataset: enough for a batch of 16


def random_images(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """uint8 images, each of its own brightness (survives resizing, unlike pixel noise)."""
    levels = rng.integers(0, 256, (shape[0],) + (1,) * (len(shape) - 1))
    noise = rng.integers(-20, 21, shape)
    return np.clip(levels + noise, 0, 255).astype(np.uint8)


def batch_of(module: ImageDataModule) -> tuple[torch.Tensor, torch.Tensor]:
    module.setup("fit")
    return next(iter(module.train_dataloader()))


def check_batch(
    images: torch.Tensor, labels: torch.Tensor, channels: int, resolution: int = 16
) -> None:
    assert images.shape == (16, channels, resolution, resolution)
    assert images.dtype == torch.float32
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert images.std() > 0.1  # real content, not a constant
    assert labels.shape == (16,)


def write_idx(raw: Path, prefix: str, rng: np.random.Generator) -> None:
    raw.mkdir(parents=True, exist_ok=True)
    images = random_images(rng, (N, 28, 28))
    labels = rng.integers(0, 10, N, dtype=np.uint8)
    for split in (prefix, "t10k"):
        (raw / f"{split}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 2051, N, 28, 28) + images.tobytes()
        )
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 2049, N) + labels.tobytes()
        )


@pytest.mark.parametrize(
    ("name", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")]
)
@pytest.mark.parametrize("channels", [1, 3])
def test_mnist_family_from_idx_files(tmp_path: Path, name: str, folder: str, channels: int) -> None:
    write_idx(tmp_path / folder / "raw", "train", np.random.default_rng(0))
    module = ImageDataModule(
        name, root=str(tmp_path), resolution=16, channels=channels, batch_size=16
    )
    check_batch(*batch_of(module), channels=channels)
    assert module.num_classes == 10


def test_cifar10_from_pickled_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.datasets import cifar

    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": random_images(rng, (8, 3072)), "labels": rng.integers(0, 10, 8).tolist()}
        (base / name).write_bytes(pickle.dumps(batch))
    (base / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    # The files are ours, so torchvision's MD5 checks of the real archive cannot match.
    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
    module = ImageDataModule(
        "cifar10", root=str(tmp_path), resolution=16, channels=3, batch_size=16
    )
    check_batch(*batch_of(module), channels=3)


def test_celeba_from_aligned_images_and_annotation_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchvision.datasets import CelebA

    base = tmp_path / "celeba"
    (base / "img_align_celeba").mkdir(parents=True)
    rng = np.random.default_rng(2)
    names = [f"{i:06d}.jpg" for i in range(1, N + 1)]
    for name in names:
        Image.fromarray(random_images(rng, (1, 218, 178, 3))[0]).save(
            base / "img_align_celeba" / name
        )
    (base / "list_eval_partition.txt").write_text("".join(f"{n} 0\n" for n in names))
    (base / "identity_CelebA.txt").write_text("".join(f"{n} 1\n" for n in names))
    attrs = [f"attr{i}" for i in range(40)]
    (base / "list_attr_celeba.txt").write_text(
        f"{N}\n"
        + " ".join(attrs)
        + "\n"
        + "".join(f"{n} " + " ".join(["1"] * 40) + "\n" for n in names)
    )
    (base / "list_bbox_celeba.txt").write_text(
        f"{N}\nimage_id x_1 y_1 width height\n" + "".join(f"{n} 1 2 3 4\n" for n in names)
    )
    (base / "list_landmarks_align_celeba.txt").write_text(
        f"{N}\nlefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y\n"
        + "".join(f"{n} " + " ".join(["1"] * 10) + "\n" for n in names)
    )
    monkeypatch.setattr(CelebA, "_check_integrity", lambda self: True)  # no MD5 of the real files
    module = ImageDataModule("celeba", root=str(tmp_path), resolution=16, channels=3, batch_size=16)
    check_batch(*batch_of(module), channels=3)
    assert module.num_classes == 0


def test_image_folder_converts_modes_and_sizes(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    for label, (mode, shape) in enumerate(
        [("RGB", (40, 30, 3)), ("L", (20, 50)), ("RGBA", (64, 64, 4))]
    ):
        folder = tmp_path / "images" / f"class{label}"
        folder.mkdir(parents=True)
        for i in range(14):
            Image.fromarray(random_images(rng, (1, *shape))[0], mode).save(folder / f"{i}.png")
    for channels in (1, 3):
        module = ImageDataModule(
            "folder", root=str(tmp_path / "images"), resolution=16, channels=channels, batch_size=16
        )
        assert module.num_classes == 3  # known before setup, for conditional networks
        check_batch(*batch_of(module), channels=channels)


def test_missing_folder_names_the_path_and_the_fix(tmp_path: Path) -> None:
    module = ImageDataModule("folder", root=str(tmp_path / "nowhere"))
    with pytest.raises(
        FileNotFoundError, match=r"data.root=.*nowhere does not exist; set data.root to a folder"
    ):
        module.setup("fit")


def test_missing_torchvision_files_explain_download(tmp_path: Path) -> None:
    module = ImageDataModule("mnist", root=str(tmp_path))
    with pytest.raises(
        FileNotFoundError, match=r"data.name=mnist: no usable dataset files.*data.download=true"
    ):
        module.setup("fit")


def test_digits_are_embedded_labelled_and_in_range() -> None:
    module = ImageDataModule("digits", resolution=16, channels=1, batch_size=16)
    check_batch(*batch_of(module), channels=1)
    assert len(module.dataset) == 1797 and module.num_classes == 10


def test_colour_digits_are_the_digits_in_a_colour_of_their_own() -> None:
    module = ImageDataModule("colour_digits", resolution=16, channels=3, batch_size=16)
    check_batch(*batch_of(module), channels=3)
    colour, labels = module.real_samples(1797)
    digits = ImageDataModule("digits", resolution=16)
    digits.setup("fit")
    grey, grey_labels = digits.real_samples(1797)
    assert torch.equal(labels, grey_labels)
    # Where the grey digit is brightest the coloured one shows its ink, brighter than its
    # background (a corner), and the colours differ between images.
    ink = colour.flatten(2)[torch.arange(1797), :, grey.flatten(1).argmax(1)]
    background = colour[:, :, 0, 0]
    assert (ink - background).sum(1).min() > 0 and ink.std(0).min() > 0.1
    with pytest.raises(ValueError, match=r"data.channels=1: data.name=colour_digits is RGB"):
        ImageDataModule("colour_digits", channels=1)


def test_sixteen_bit_images_are_scaled_by_bit_depth_not_clipped(tmp_path: Path) -> None:
    folder = tmp_path / "images" / "scans"
    folder.mkdir(parents=True)
    gradient = np.linspace(0, 65535, 16 * 16).reshape(16, 16).astype(np.uint16)
    for i in range(16):
        Image.fromarray(gradient).save(folder / f"{i}.png")  # a 16-bit greyscale PNG
    for channels in (1, 3):
        module = ImageDataModule(
            "folder", root=str(tmp_path / "images"), resolution=16, channels=channels, batch_size=16
        )
        images, _ = batch_of(module)
        expected = torch.from_numpy(np.round(gradient / 257) / 255 * 2 - 1).float()
        torch.testing.assert_close(images[0, 0], expected, atol=1e-5, rtol=0)
        assert (images == 1.0).float().mean() < 0.01  # not clipped to white


def test_a_truncated_jpeg_is_skipped_at_start_up_and_named(tmp_path: Path) -> None:
    folder = tmp_path / "images" / "photos"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(20):
        Image.fromarray(random_images(rng, (1, 32, 32, 3))[0]).save(folder / f"{i}.jpg")
    whole = (folder / "0.jpg").read_bytes()
    (folder / "0.jpg").write_bytes(whole[: len(whole) // 2])  # its header still verifies
    module = ImageDataModule(
        "folder", root=str(tmp_path / "images"), resolution=16, channels=3, batch_size=16
    )
    with pytest.warns(UserWarning, match=r"skipping 1 unreadable image file.*0\.jpg"):
        module.setup("fit")
    assert len(module.dataset) == 19
    check_batch(*batch_of(module), channels=3)


def test_without_the_start_up_check_a_bad_file_stops_with_its_name(tmp_path: Path) -> None:
    from gan_template.harness.errors import DataError

    folder = tmp_path / "images" / "photos"
    folder.mkdir(parents=True)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    module = ImageDataModule(
        "folder", root=str(tmp_path / "images"), resolution=16, channels=3, verify_images=False
    )
    module.setup("fit")
    with pytest.raises(DataError, match=r"broken\.jpg: cannot be decoded"):
        module.dataset[0]


@pytest.mark.parametrize("channels", [1, 3])
def test_image_folders_load_in_spawned_workers(tmp_path: Path, channels: int) -> None:
    # spawn/forkserver (macOS, Windows, Python 3.14 on Linux) pickle the dataset and transform.
    folder = tmp_path / "images" / "a"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(8):
        Image.fromarray(random_images(rng, (1, 20, 20, 3))[0]).save(folder / f"{i}.png")
    module = ImageDataModule(
        "folder", root=str(tmp_path / "images"), resolution=16, channels=channels, batch_size=4
    )
    module.setup("fit")
    loader = torch.utils.data.DataLoader(
        module.dataset, batch_size=4, num_workers=1, multiprocessing_context="spawn"
    )
    images, labels = next(iter(loader))
    assert images.shape == (4, channels, 16, 16) and labels.tolist() == [0, 0, 0, 0]


def test_exif_orientation_is_applied_and_animated_gifs_give_their_first_frame(
    tmp_path: Path,
) -> None:
    from gan_template.data.images import load_image

    # Stored 8 wide x 4 high, left half white; EXIF orientation 6: shown rotated 90 degrees
    # clockwise, 4 wide x 8 high with the white half on top.
    stored = np.zeros((4, 8), dtype=np.uint8)
    stored[:, :4] = 255
    photos, animations = tmp_path / "images" / "photos", tmp_path / "images" / "animations"
    photos.mkdir(parents=True)
    animations.mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    for i in range(8):
        Image.fromarray(stored, "L").save(photos / f"{i}.jpg", exif=exif, quality=100)
        frames = [Image.new("L", (8, 8), 255), Image.new("L", (8, 8), 0)]
        frames[0].save(animations / f"{i}.gif", save_all=True, append_images=frames[1:])
    upright = np.asarray(load_image(str(photos / "0.jpg")))
    assert upright.shape == (8, 4)  # rows, columns: 8 high, 4 wide
    assert upright[:4].mean() > 200 and upright[4:].mean() < 50
    assert np.asarray(load_image(str(animations / "0.gif")).convert("L")).min() == 255
    module = ImageDataModule("folder", root=str(tmp_path / "images"), resolution=8, batch_size=8)
    module.setup("fit")
    assert len(module.dataset) == 16 and module.num_classes == 2  # the GIFs are used

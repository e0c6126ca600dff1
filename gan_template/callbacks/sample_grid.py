"""A grid of samples from fixed noise, every N iterations and at the end."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torchvision.utils import make_grid, save_image

from gan_template import models
from gan_template.callbacks.periodic import EveryNIterations, require_noise_input
from gan_template.harness.loggers import log_image
from gan_template.module import GANModule, as_gan_module


def save_interpolation(
    generator: torch.nn.Module, path: Path, rows: int = 8, steps: int = 10, seed: int = 0
) -> Path:
    """A PNG of ``rows`` latent walks (``models.latent_walks``), one per row, images in [-1, 1]."""
    noise, labels = models.latent_walks(generator, rows, steps, seed)
    images = models.generate(generator, noise, labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images, path, nrow=steps, normalize=True, value_range=(-1.0, 1.0), pad_value=1.0)
    return path


class SampleGrid(EveryNIterations):
    """Renders ``rows x columns`` samples of the EMA generator (eval mode, no grad) to PNG.

    The noise is fixed for the whole run (its own seed, never the training
    RNG), so successive grids show the same latent points evolving. When the
    generator is class-conditional, row ``r`` shows class ``r % num_classes``.

    Files: ``<run dir>/samples/grid_iterNNNNNNN.png`` and ``grid_last.png``; the
    grid also goes to the loggers that show pictures (TensorBoard, W&B, MLflow).
    At the end of the run also ``interpolation.png``: ``interpolation_rows``
    rows, each a spherical walk of ``interpolation_steps`` images between two
    random latents (``models.latent_walks``; 0 rows: none).
    """

    def __init__(
        self,
        every_n_iterations: int = 500,
        rows: int = 10,
        columns: int = 10,
        seed: int = 4321,
        interpolation_rows: int = 8,
        interpolation_steps: int = 10,
    ) -> None:
        super().__init__(every_n_iterations)
        if rows < 1 or columns < 1:
            raise ValueError(f"rows={rows}, columns={columns}: both must be >= 1")
        if interpolation_rows < 0 or interpolation_steps < 2:
            raise ValueError(
                f"interpolation_rows={interpolation_rows}, interpolation_steps="
                f"{interpolation_steps}: need rows >= 0 (0: none) and steps >= 2"
            )
        self.rows = rows
        self.columns = columns
        self.seed = seed
        self.interpolation_rows = interpolation_rows
        self.interpolation_steps = interpolation_steps

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require_noise_input(pl_module, "the sample grid (callbacks.sample_grid)")

    def run(self, trainer: L.Trainer, pl_module: GANModule) -> None:
        self.render(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if as_gan_module(pl_module).stop_reason is not None:
            return
        if self.interpolation_rows and trainer.is_global_zero:
            module = as_gan_module(pl_module)
            path = Path(trainer.default_root_dir) / "samples" / "interpolation.png"
            save_interpolation(
                module.sampling_generator,
                path,
                self.interpolation_rows,
                self.interpolation_steps,
                self.seed,
            )
            log_image(trainer.loggers, "interpolation", path, module.iteration)

    def render(self, trainer: L.Trainer, pl_module: GANModule) -> Path | None:
        if not trainer.is_global_zero:
            return None
        n = self.rows * self.columns
        noise = torch.randn(
            n, pl_module.latent_dim, generator=torch.Generator().manual_seed(self.seed)
        )
        labels = (
            torch.arange(n) // self.columns % pl_module.num_classes
            if pl_module.conditional
            else None
        )
        images = models.generate(pl_module.sampling_generator, noise, labels)
        grid = make_grid(
            images,
            nrow=self.columns,
            normalize=True,
            value_range=(-1.0, 1.0),
            pad_value=1.0,
        )
        directory = Path(trainer.default_root_dir) / "samples"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"grid_iter{pl_module.iteration:07d}.png"
        save_image(grid, path)
        save_image(grid, directory / "grid_last.png")
        log_image(trainer.loggers, "samples", path, pl_module.iteration)
        return path

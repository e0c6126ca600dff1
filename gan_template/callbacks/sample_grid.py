"""A grid of samples from fixed noise, every N iterations and at the end."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torchvision.utils import make_grid, save_image

from gan_template import models
from gan_template.callbacks.periodic import EveryNIterations
from gan_template.loggers import log_image
from gan_template.module import GANModule


class SampleGrid(EveryNIterations):
    """Renders ``rows x columns`` samples of the EMA generator (eval mode, no grad) to PNG.

    The noise is fixed for the whole run (its own seed, never the training
    RNG), so successive grids show the same latent points evolving. When the
    generator is class-conditional, row ``r`` shows class ``r % num_classes``.

    Files: ``<run dir>/samples/grid_iterNNNNNNN.png`` and ``grid_last.png``; the
    grid also goes to the loggers that show pictures (TensorBoard, W&B, MLflow).
    """

    def __init__(
        self, every_n_iterations: int = 500, rows: int = 10, columns: int = 10, seed: int = 4321
    ) -> None:
        super().__init__(every_n_iterations)
        self.rows = rows
        self.columns = columns
        self.seed = seed

    def run(self, trainer: L.Trainer, pl_module: GANModule) -> None:
        self.render(trainer, pl_module)

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

"""Mode coverage of the toy mixtures, measured during training and at the end."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.seed import isolate_rng

from gan_template import models
from gan_template.callbacks.periodic import FINAL_METRICS, EveryNIterations
from gan_template.harness.loggers import log_at_iteration, log_image
from gan_template.metrics.toy import ModeCoverage, mode_coverage
from gan_template.module import GANModule, as_gan_module


class ToyMixtureEvaluation(EveryNIterations):
    """Every ``every_n_iterations`` (and at the end): score samples, log them, plot them.

    Samples come from the EMA generator where there is one, from a fixed noise
    seed so that successive evaluations are comparable, and from a private RNG
    so that evaluation never changes the training's random stream.

    Args:
        every_n_iterations: evaluation period in iterations; 0 evaluates at the end only.
        num_samples: generated samples per evaluation (PacGAN's protocol uses 2,500).
        save_plots: write a scatter plot PNG per evaluation under ``<run dir>/samples``.
        seed: seed of the evaluation noise.
    """

    def __init__(
        self,
        every_n_iterations: int = 500,
        num_samples: int = 2500,
        save_plots: bool = True,
        seed: int = 1234,
    ) -> None:
        super().__init__(every_n_iterations)
        if num_samples < 1:  # checked here, not at the first evaluation
            raise ValueError(f"num_samples={num_samples}: must be >= 1 (PacGAN's protocol: 2500)")
        self.num_samples = num_samples
        self.save_plots = save_plots
        self.seed = seed
        self.result: ModeCoverage | None = None

    def run(self, trainer: L.Trainer, pl_module: GANModule) -> None:
        self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        pl_module = as_gan_module(pl_module)
        if self.result is not None and trainer.is_global_zero:
            # The values go into the run's one result file, final_metrics.json (train.py).
            path = Path(trainer.default_root_dir) / FINAL_METRICS
            r = self.result
            rank_zero_info(
                f"Mode coverage at iteration {pl_module.iteration}: {r.modes_captured}/{r.num_modes} modes, "
                f"{100 * r.high_quality:.1f}% high quality, reverse KL {r.reverse_kl:.3f} ({path})"
            )

    @torch.no_grad()
    @isolate_rng()  # metrics draw (KID subsets, noise) without moving training's streams
    def evaluate(self, trainer: L.Trainer, pl_module: GANModule) -> ModeCoverage:
        datamodule = trainer.datamodule  # type: ignore[attr-defined]  # set by Lightning
        rng = torch.Generator().manual_seed(self.seed)
        noise = torch.randn(self.num_samples, pl_module.latent_dim, generator=rng)
        samples = models.generate(pl_module.sampling_generator, noise)

        self.result = mode_coverage(samples, datamodule.modes, datamodule.std)
        metrics = {
            "toy/modes_captured": float(self.result.modes_captured),
            "toy/high_quality": self.result.high_quality,
            "toy/reverse_kl": self.result.reverse_kl,
        }
        self.last_metrics = metrics
        log_at_iteration(trainer.loggers, metrics, pl_module.iteration)
        if self.save_plots and trainer.is_global_zero:
            png = self._plot(
                samples, datamodule.modes, Path(trainer.default_root_dir), pl_module.iteration
            )
            log_image(trainer.loggers, "samples", png, pl_module.iteration)
        return self.result

    def _plot(
        self, samples: torch.Tensor, modes: torch.Tensor, run_dir: Path, iteration: int
    ) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        r = self.result
        assert r is not None
        figure, axes = plt.subplots(figsize=(5, 5), dpi=100)
        axes.scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.4, label="generated")
        axes.scatter(modes[:, 0], modes[:, 1], s=40, marker="x", color="red", label="modes")
        span = float(modes.abs().max()) * 1.5
        axes.set(xlim=(-span, span), ylim=(-span, span), aspect="equal")
        axes.set_title(
            f"iteration {iteration}: {r.modes_captured}/{r.num_modes} modes, "
            f"{100 * r.high_quality:.1f}% HQ, rKL {r.reverse_kl:.2f}",
            fontsize=9,
        )
        axes.legend(loc="upper right", fontsize=7)
        directory = run_dir / "samples"
        directory.mkdir(parents=True, exist_ok=True)
        png = directory / f"toy_iter{iteration:07d}.png"
        figure.savefig(png)
        plt.close(figure)
        return png

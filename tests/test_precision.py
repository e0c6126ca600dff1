"""Mixed precision with the manual loop: clipping in unscaled units, overflow skips counted."""

from __future__ import annotations

from typing import Any

import lightning as L
import pytest
import torch
from helpers import StepRecorder, run, without_evaluation
from lightning.pytorch.callbacks import Callback


class ClippedNormProbe(Callback):
    """Records the total gradient norm each optimizer sees at the moment it steps."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        def record(optimizer: torch.optim.Optimizer, *_: Any) -> None:
            grads = [
                p.grad
                for group in optimizer.param_groups
                for p in group["params"]
                if p.grad is not None
            ]
            if grads:
                self.norms.append(float(torch.nn.utils.get_total_norm(grads)))

        for optimizer in trainer.optimizers:
            # A post-hook: with a closure (32-bit, bf16) the pre-hooks run before the
            # closure, i.e. before the clipping in on_before_optimizer_step.
            optimizer.register_step_post_hook(record)


# Lightning maps precision="16-mixed" to bf16 on CPU; an explicit plugin with a CPU
# GradScaler runs the real fp16 loss-scaling path here.
FP16_WITH_SCALER = (
    "trainer.precision=null",
    "+trainer.plugins=[{_target_: lightning.pytorch.plugins.precision.MixedPrecision, precision: 16-mixed,"
    " device: cpu, scaler: {_target_: torch.amp.GradScaler, device: cpu, init_scale: 1024.0}}]",
)


@pytest.mark.parametrize(
    "precision",
    [("trainer.precision=bf16-mixed",), FP16_WITH_SCALER],
    ids=["bf16-mixed", "16-mixed+GradScaler"],
)
@pytest.mark.parametrize("experiment", ["ring", "dcgan"])
def test_clipped_gradient_norm_equals_max_norm_in_unscaled_units(
    make_config, precision: tuple[str, ...], experiment: str
) -> None:
    probe = ClippedNormProbe()
    cfg = make_config(
        f"experiment={experiment}",
        "train.iterations=4",
        "optim.gradient_clip_norm=0.001",
        *precision,
    )
    result = run(without_evaluation(cfg), probe)
    assert result["iteration"] == 4
    assert len(probe.norms) == 8
    # Clipping on scaled gradients (Lightning #18089) would leave 0.001 / 1024 after unscaling.
    assert probe.norms == pytest.approx([0.001] * 8, rel=1e-3)


def test_fp16_overflow_is_skipped_and_counted_and_the_scaler_recovers(make_config) -> None:
    overflowing = [o.replace("init_scale: 1024.0", "init_scale: 1.0e+30") for o in FP16_WITH_SCALER]
    recorder = StepRecorder()
    cfg = make_config(
        "experiment=ring", "train.iterations=5", *overflowing, "skip.max_consecutive=200"
    )
    result = run(without_evaluation(cfg), recorder)
    module = result["module"]
    skipped = sum(1 for out in recorder.outputs if not out)
    assert module.iteration == 5
    assert skipped >= 1 and module.skip_rule.counts["amp_overflow"] == skipped
    assert all(torch.isfinite(p).all() for p in module.parameters())
    scaler = module.trainer.precision_plugin.scaler
    assert scaler.get_scale() < 1.0e30  # lowered after each overflow


@pytest.mark.parametrize("precision", ["bf16-true", "64-true"])
def test_true_precisions_train_and_evaluate_in_the_module_dtype(
    make_config, precision: str
) -> None:
    """The module, the noise and the evaluations' samples all follow ``trainer.precision``."""
    cfg = make_config(
        "experiment=dcgan",
        f"trainer.precision={precision}",
        "train.iterations=3",
        "callbacks.image_eval.num_samples=128",
        "augment=adaptive",  # its state stays float32 whatever the module's dtype
    )
    result = run(cfg)
    module = result["module"]
    dtype = {"bf16-true": torch.bfloat16, "64-true": torch.float64}[precision]
    assert result["iteration"] == 3
    assert next(module.generator.parameters()).dtype == dtype
    assert module.augment.p.dtype == torch.float32
    assert module.skip_rule.total == 0
    assert {"image/fid", "image/recall"} <= result["final_metrics"].keys()


def test_16_true_with_adams_default_eps_is_flagged_before_training(
    make_config, caplog: pytest.LogCaptureFixture
) -> None:
    from gan_template.harness.train import warn_about_precision

    with caplog.at_level("WARNING", logger="gan_template.harness.train"):
        warn_about_precision(make_config("experiment=ring", "trainer.precision=16-true"))
    assert "with optim.generator.eps=1e-08, optim.discriminator.eps=1e-08 (below" in caplog.text
    assert "Use trainer.precision=16-mixed" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="gan_template.harness.train"):
        larger_eps = ["+optim.generator.eps=1e-4", "+optim.discriminator.eps=1e-4"]
        warn_about_precision(
            make_config("experiment=ring", "trainer.precision=16-true", *larger_eps)
        )
        warn_about_precision(make_config("experiment=ring", "trainer.precision=bf16-true"))
    assert caplog.text == ""

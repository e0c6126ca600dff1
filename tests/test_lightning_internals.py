"""Each private or internal name the template uses still works in the installed Lightning/torch.

If one of these fails after an upgrade, fix ``gan_template/harness/lightning_internals.py`` (the only
place that touches these names) before raising the ``lightning`` pin.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.plugins.precision import MixedPrecision

from gan_template.harness import lightning_internals as internals


def test_add_prefix_and_flatten_params_match_what_loggers_write() -> None:
    assert internals.add_prefix({"loss": 1.0}, "train", "/") == {"train/loss": 1.0}
    assert internals.add_prefix({"loss": 1.0}, "", "/") == {"loss": 1.0}
    flat = internals.flatten_params({"run_config": {"optim": {"lr": 0.1}, "tags": None}})
    assert flat == {"run_config/optim/lr": 0.1, "run_config/tags": None}


def test_the_appending_writer_keeps_an_existing_metrics_file(tmp_path: Path) -> None:
    first = internals.AppendingExperimentWriter(log_dir=str(tmp_path))
    first.log_metrics({"a": 1.0}, step=1)
    first.save()
    second = internals.AppendingExperimentWriter(log_dir=str(tmp_path))  # a resumed run
    second.log_metrics({"a": 2.0}, step=2)
    second.save()
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",") == ["a", "step"] and len(rows) == 3


def test_the_progress_bar_rule_redraws_at_its_rate_and_at_the_end() -> None:
    bar = TQDMProgressBar(refresh_rate=10)
    assert internals.progress_bar_due(bar, 20, 100)
    assert not internals.progress_bar_due(bar, 21, 100)
    assert internals.progress_bar_due(bar, 100, 100)


def test_loop_progress_and_the_precision_scaler_are_where_the_template_reads_them() -> None:
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    assert internals.batches_done_in_epoch(trainer) == 0
    assert internals.precision_scaler(trainer) is None  # 32-bit: no GradScaler
    # 16-mixed on a GPU: Lightning's MixedPrecision plugin holds the GradScaler as `scaler`.
    plugin = MixedPrecision("16-mixed", device="cpu", scaler=torch.amp.GradScaler("cpu"))
    with_plugin = L.Trainer(accelerator="cpu", logger=False, plugins=[plugin])
    assert internals.precision_scaler(with_plugin) is plugin.scaler is not None


@pytest.mark.parametrize(("fused", "expected"), [(True, True), (False, False)])
def test_fused_optimizers_take_found_inf(fused: bool, expected: bool) -> None:
    param = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.Adam([param], fused=fused)
    assert internals.step_takes_found_inf(optimizer) is expected
    if fused:  # the protocol itself: found_inf = 1 makes the step apply nothing
        param.grad = torch.ones(3)
        optimizer.found_inf = torch.ones(())  # type: ignore[attr-defined]
        optimizer.step()
        assert torch.equal(param.detach(), torch.zeros(3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_flag_nonfinite_sets_the_flag_and_leaves_the_values(dtype: torch.dtype) -> None:
    finite = [torch.randn(5, 3).to(dtype), torch.randn(7).to(dtype)]
    before = [t.clone() for t in finite]
    found, one = torch.zeros(1), torch.ones(1)
    internals.flag_nonfinite(finite, found, one)
    assert found.item() == 0.0 and all(map(torch.equal, finite, before))
    for bad in (float("inf"), float("-inf"), float("nan")):
        tensors = [*finite, torch.tensor([1.0, bad]).to(dtype)]
        found = torch.zeros(1)
        internals.flag_nonfinite(tensors, found, one)
        assert found.item() == 1.0


def test_lightnings_per_batch_sigterm_broadcast_is_where_it_is_switched_off() -> None:
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    loop = trainer.fit_loop.epoch_loop
    assert callable(type(loop)._broadcast_sigterm_tensor)  # still Lightning's name for it
    internals.disable_sigterm_broadcast(trainer)
    assert loop._broadcast_sigterm_tensor() is None  # no collective, no host read


def test_the_loggers_state_the_subclasses_read_is_where_they_read_it(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, WandbLogger

    csv_logger = CSVLogger(tmp_path, name="csv", prefix="p")
    assert internals.logger_run(csv_logger) is None  # made on first use
    assert internals.logger_prefix(csv_logger) == "p"
    internals.logger_filesystem(csv_logger).makedirs(tmp_path / "made", exist_ok=True)
    writer = csv_logger.experiment
    assert internals.logger_run(csv_logger) is writer
    internals.set_logger_run(csv_logger, None)
    assert internals.logger_run(csv_logger) is None

    wandb_logger = WandbLogger(save_dir=str(tmp_path), offline=True)
    assert (
        internals.logger_run(wandb_logger) is None and internals.logger_prefix(wandb_logger) == ""
    )

    mlflow_logger = MLFlowLogger(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert internals.mlflow_run_id(mlflow_logger) is None  # asking starts nothing
    mlflow_logger.experiment  # noqa: B018  # starts the run
    assert internals.mlflow_run_id(mlflow_logger) == mlflow_logger.run_id


def test_the_ddp_strategys_timeout_and_backend_are_where_they_are_read() -> None:
    from datetime import timedelta

    from gan_template.harness.strategy import RestartableDDPStrategy

    strategy = RestartableDDPStrategy(timeout=timedelta(seconds=42))
    L.Trainer(accelerator="cpu", devices=2, strategy=strategy, logger=False)  # sets its devices
    assert internals.ddp_settings(strategy) == (timedelta(seconds=42), "gloo")

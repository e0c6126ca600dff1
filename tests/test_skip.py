"""The skip rule: what a skipped iteration does, and does not do, in a real Trainer."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
from helpers import StepRecorder, run, without_evaluation

from gan_template.harness.skip import TooManySkips


@pytest.mark.parametrize("experiment", ["ring", "dcgan", "wgan_gp"])
def test_injected_nonfinite_loss_skips_the_iteration_without_touching_any_state(
    make_config, experiment: str
) -> None:
    recorder = StepRecorder()
    overrides = [f"experiment={experiment}", "train.iterations=6", "skip.inject_nonfinite_at=[2,4]"]
    result = run(without_evaluation(make_config(*overrides)), recorder)

    skipped = [i for i, out in enumerate(recorder.outputs) if not out]
    assert skipped == [2, 5]  # iteration 2 is attempted at batch 2; iteration 4 at batch 5
    # A skipped iteration reaches on_train_batch_end as {} and changes no weight,
    # no EMA weight and no optimizer state; completed ones do change them.
    assert [recorder.unchanged[i] for i in skipped] == [True, True]
    assert not any(recorder.unchanged[i] for i in range(len(recorder.outputs)) if i not in skipped)
    module = result["module"]
    assert module.iteration == 6 and len(recorder.outputs) == 8
    assert module.discriminator_updates == 6 * module.schedule.n_critic
    assert dict(module.skip_rule.counts) == {"nonfinite_loss": 2}  # counted once each
    assert module.skip_rule.consecutive == 0


def test_completed_iterations_return_detached_scalars(make_config) -> None:
    recorder = StepRecorder()
    cfg = make_config(
        "experiment=ring",
        "train.iterations=4",
        "penalty=gradient_penalty",
        "trainer.log_every_n_steps=2",
    )
    run(cfg, recorder)
    losses = {"d_loss", "g_loss", "d_penalty"}
    diagnostics = {"d_real", "d_fake", "d_accuracy_real", "d_accuracy_fake"}
    diagnostics |= {"d_grad_norm", "g_grad_norm"}
    # The diagnostics only on the iterations that log (2 and 4).
    keys = [outputs.keys() for outputs in recorder.outputs]
    assert keys == [losses, losses | diagnostics, losses, losses | diagnostics]
    for outputs in recorder.outputs:
        for value in outputs.values():
            assert isinstance(value, torch.Tensor) and value.dim() == 0
            assert value.grad_fn is None and not value.requires_grad


def reject_iteration_one(metrics: Mapping[str, torch.Tensor], iteration: int) -> bool:
    return iteration == 1


@pytest.mark.parametrize(
    ("experiment", "checks"),
    [
        ("ring", []),
        ("dcgan", []),
        # The predicate is a check of its own: switching the others off leaves it on.
        ("ring", ["skip.check_losses=false", "skip.check_gradients=false"]),
    ],
)
def test_user_predicate_skips_with_its_own_reason(
    make_config, experiment: str, checks: list[str]
) -> None:
    # dcgan has BatchNorm: running statistics updated by the abandoned forwards are restored.
    cfg = make_config(
        f"experiment={experiment}",
        *checks,
        "train.iterations=3",
        f"skip.predicate={{_target_: {__name__}.reject_iteration_one, _partial_: true}}",
        "skip.max_consecutive=3",
        f"extra_target_prefixes=[{__name__}.]",
    )
    recorder = StepRecorder()
    without_evaluation(cfg)
    # Iteration 1 is rejected every time it is attempted: the consecutive limit ends the run.
    with pytest.raises(TooManySkips, match="3 consecutive skipped iterations at iteration 1"):
        run(cfg, recorder)
    assert [bool(o) for o in recorder.outputs] == [True, False, False, False]
    assert all(recorder.unchanged[1:])
    # The stop saved a resumable checkpoint of the last good state.
    saved = torch.load(Path(cfg.paths.run_dir) / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["gan_template"]["iteration"] == 1
    assert saved["gan_template"]["skip"]["counts"] == {"predicate": 3}


class NaNGradient(torch.nn.Module):
    """Identity forward; NaN gradient backward on chosen calls (a real non-finite gradient)."""

    def __init__(self, poison_calls: set[int]) -> None:
        super().__init__()
        self.poison_calls = poison_calls
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls in self.poison_calls and x.requires_grad:
            x.register_hook(lambda g: torch.full_like(g, float("nan")))
        return x


@pytest.mark.parametrize("log_every", [1, 100], ids=["from-the-norm", "without-a-norm"])
def test_nonfinite_gradient_skips_the_update_and_keeps_weights_finite(
    make_config, log_every: int
) -> None:
    """Flagged from the logged gradient norm, or, on iterations that do not log, by a fused check."""
    from gan_template.harness import train as train_module

    cfg = make_config(
        "experiment=ring", "train.iterations=4", f"trainer.log_every_n_steps={log_every}"
    )
    original = train_module.build_module

    def build_with_poison(cfg, **kwargs):
        module = original(cfg, **kwargs)
        # The generator phase's D forward is D call 3 of an iteration (real, fake, then G phase).
        module.discriminator.net.insert(0, NaNGradient({2 * 3 + 3}))
        return module

    train_module.build_module = build_with_poison
    recorder = StepRecorder()
    try:
        result = run(cfg, recorder)
    finally:
        train_module.build_module = original
    module = result["module"]
    assert [bool(o) for o in recorder.outputs] == [True, True, False, True, True]
    assert dict(module.skip_rule.counts) == {"nonfinite_gradient": 1}
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_too_many_skips_ends_the_command_with_its_message_alone(tmp_path: Path) -> None:
    import subprocess
    import sys

    completed = subprocess.run(
        [sys.executable, "-m", "gan_template", "experiment=ring", "train.iterations=10",
         "skip.inject_nonfinite_at=[2]", "skip.max_consecutive=1",
         "callbacks.toy_eval.every_n_iterations=0", "trainer.enable_progress_bar=false",
         f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 3  # documented in the README
    assert "Traceback" not in completed.stderr
    assert "gan_template: error: stopped after 1 consecutive skipped iterations at iteration 2" in (
        completed.stderr
    )
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["gan_template"]["iteration"] == 2


@pytest.mark.parametrize(("threshold", "skips"), [(10.0, 0), (-1.0, 3)])
def test_a_predicate_on_d_loss_sees_it_at_the_generator_update_too(
    make_config, threshold: float, skips: int
) -> None:
    """``metrics["d_loss"] > threshold`` at every update; its skips carry the name it was given."""
    cfg = make_config(
        "experiment=ring",
        "train.iterations=3",
        f"skip.predicate={{_target_: ddp_probe.DiscriminatorLossAbove, threshold: {threshold}}}",
        "skip.predicate_reason=d_loss_high",
        "skip.max_consecutive=3",
        "extra_target_prefixes=[ddp_probe.]",
    )
    recorder = StepRecorder()
    if not skips:
        assert run(without_evaluation(cfg), recorder)["module"].iteration == 3
        assert all(recorder.outputs)
        return
    with pytest.raises(TooManySkips, match=r"d_loss_high x3"):
        run(without_evaluation(cfg), recorder)
    saved = torch.load(Path(cfg.paths.run_dir) / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["gan_template"]["skip"]["counts"] == {"d_loss_high": 3}


def raise_at_iteration_two(metrics: Mapping[str, torch.Tensor], iteration: int) -> bool:
    if iteration == 2:
        raise RuntimeError("my bug")
    return False


def test_a_predicate_that_raises_is_named_with_the_iteration(make_config) -> None:
    from gan_template.harness.skip import SkipPredicateError

    cfg = make_config(
        "experiment=ring",
        "train.iterations=4",
        f"skip.predicate={{_target_: {__name__}.raise_at_iteration_two, _partial_: true}}",
        f"extra_target_prefixes=[{__name__}.]",
    )
    with pytest.raises(SkipPredicateError) as raised:
        run(without_evaluation(cfg))
    message = str(raised.value)
    assert (
        f"skip.predicate {__name__}.raise_at_iteration_two raised RuntimeError: my bug" in message
    )
    assert "test_skip.py:" in message and "at iteration 2" in message

"""Exact resume: N iterations, stop, resume to 2N gives the 2N-iteration run, bit for bit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import run, same_tensors

SMALL_EPOCHS = {
    "ring": ["data.num_samples=2048"],
    "dcgan": ["data.batch_size=256"],
}  # 8 and 7 batches


def last_checkpoint(run_dir: Path) -> dict[str, Any]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)


@pytest.mark.parametrize("experiment", ["ring", "dcgan"])
def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(
    make_config, tmp_path: Path, experiment: str
) -> None:
    common = [
        f"experiment={experiment}",
        "trainer.deterministic=true",
        "ema.rampup=null",  # an EMA with memory from the first update: a lost update would show
        "skip.inject_nonfinite_at=[3,14]",  # a skip before the interruption and one after
        # Evaluations draw random numbers too (KID subsets): they must not disturb training.
        f"callbacks.{'toy_eval' if experiment == 'ring' else 'image_eval'}.every_n_iterations=5",
        *SMALL_EPOCHS[experiment],  # so the runs cross epoch boundaries
    ]
    if experiment == "dcgan":
        common.append("callbacks.image_eval.num_samples=256")
        # Parts with running state of their own (ADA's p and sign sums, LeCam's averages):
        # they resume, and a skipped iteration leaves them as they were.
        # Path length's running mean too (every 3rd generator update).
        common += ["augment=adaptive", "augment.speed_images=2000", "penalty=lecam"]
        common += ["regularizers=[path_length]", "regularizers.path_length.interval=3"]
    straight, first, resumed = tmp_path / "straight", tmp_path / "first", tmp_path / "resumed"
    run(make_config(*common, "train.iterations=20", run_dir=straight))
    run(make_config(*common, "train.iterations=10", run_dir=first))
    ckpt = first / "checkpoints" / "last.ckpt"
    run(make_config(*common, "train.iterations=20", f"ckpt_path={ckpt}", run_dir=resumed))

    expected, actual = last_checkpoint(straight), last_checkpoint(resumed)
    assert actual["gan_template"]["iteration"] == 20
    assert actual["gan_template"]["skip"] == expected["gan_template"]["skip"]
    assert actual["gan_template"]["skip"]["counts"] == {"nonfinite_loss": 2}
    # Networks, EMA, BatchNorm statistics: every tensor identical.
    assert expected["state_dict"].keys() == actual["state_dict"].keys()
    for key, value in expected["state_dict"].items():
        assert torch.equal(value, actual["state_dict"][key]), key
    if experiment == "dcgan":
        assert actual["state_dict"]["augment.p"] > 0  # it moved, so its resume is tested
        assert torch.isfinite(actual["state_dict"]["penalty.real_mean"])
        assert actual["state_dict"]["regularizer_state.path_length.mean"] > 0
    assert same_tensors(expected["optimizer_states"], actual["optimizer_states"])
    assert same_tensors(
        expected["gan_template"]["rng"][0]["torch"], actual["gan_template"]["rng"][0]["torch"]
    )
    assert (
        expected["loops"]["fit_loop"]["epoch_progress"]
        == actual["loops"]["fit_loop"]["epoch_progress"]
    )


def test_a_learning_rate_changed_on_resume_is_applied_and_stored(
    make_config, tmp_path: Path
) -> None:
    first, resumed = tmp_path / "first", tmp_path / "resumed"
    common = ["experiment=ring", "callbacks.toy_eval.every_n_iterations=0"]
    run(make_config(*common, "train.iterations=3", run_dir=first))
    ckpt = first / "checkpoints" / "last.ckpt"
    result = run(
        make_config(
            *common,
            "train.iterations=5",
            f"ckpt_path={ckpt}",
            "optim.generator.lr=0.05",
            "optim.discriminator.lr=0.01",
            run_dir=resumed,
        )
    )
    optimizer_g, optimizer_d = (o.optimizer for o in result["module"].optimizers())
    assert optimizer_g.param_groups[0]["lr"] == 0.05
    assert optimizer_d.param_groups[0]["lr"] == 0.01
    saved = last_checkpoint(resumed)  # what the new checkpoint says is what ran
    assert saved["optimizer_states"][0]["param_groups"][0]["lr"] == 0.05
    assert saved["hyper_parameters"]["run_config"]["optim"]["generator"]["lr"] == 0.05


def test_resuming_with_other_network_shapes_names_the_keys_and_the_checkpoint_values(
    make_config, tmp_path: Path
) -> None:
    from gan_template.harness.errors import ConfigError

    first = tmp_path / "first"
    common = ["experiment=ring", "callbacks.toy_eval.every_n_iterations=0"]
    run(make_config(*common, "train.iterations=2", run_dir=first))
    ckpt = first / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError) as refused:
        run(
            make_config(
                *common,
                "train.iterations=4",
                f"ckpt_path={ckpt}",
                "model.generator.hidden_dim=64",
                "model.generator.latent_dim=3",
                "train.n_critic=2",  # allowed: not a shape
                run_dir=tmp_path / "resumed",
            )
        )
    message = str(refused.value)
    # Each tensor whose shape differs, with both shapes, then the settings behind them.
    assert "generator.net.0.weight: (128, 2) in the checkpoint, (64, 3) now" in message
    assert "generator_ema.module.net.0.weight: (128, 2) in the checkpoint, (64, 3) now" in message
    assert "model.generator.hidden_dim=128 in the checkpoint, 64 now" in message
    assert "model.generator.latent_dim=2 in the checkpoint, 3 now" in message
    assert "n_critic" not in message


def test_a_change_that_shapes_no_tensor_is_applied_on_resume(make_config, tmp_path: Path) -> None:
    """Resume compares tensor shapes, not config keys: a new BatchNorm epsilon resumes."""
    common = ["experiment=dcgan", "model=mlp_image", "callbacks.image_eval.every_n_iterations=0"]
    run(make_config(*common, "train.iterations=2", run_dir=tmp_path / "first"))
    ckpt = f"ckpt_path={tmp_path / 'first' / 'checkpoints' / 'last.ckpt'}"
    changed = ["train.iterations=3", "model.generator.batch_norm_eps=0.5"]
    module = run(make_config(*common, ckpt, *changed, run_dir=tmp_path / "resumed"))["module"]
    assert module.iteration == 3
    norms = [m for m in module.generator.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert norms and all(m.eps == 0.5 for m in norms)


def test_ckpt_path_auto_starts_afresh_then_resumes_from_the_run_directory(tmp_path: Path) -> None:
    from gan_template.harness.train import resolve_checkpoint

    assert resolve_checkpoint("auto", tmp_path) is None  # nothing saved yet: a fresh start
    saved = tmp_path / "checkpoints" / "last.ckpt"
    saved.parent.mkdir()
    torch.save({"state_dict": {}}, saved)
    assert resolve_checkpoint("auto", tmp_path) == str(saved)


def test_a_new_run_into_a_directory_holding_a_run_is_refused(tmp_path: Path) -> None:
    from gan_template.harness.errors import ConfigError
    from gan_template.harness.train import resolve_checkpoint

    assert resolve_checkpoint(None, tmp_path) is None
    saved = tmp_path / "checkpoints" / "last.ckpt"
    saved.parent.mkdir()
    torch.save({"state_dict": {}}, saved)
    with pytest.raises(ConfigError, match=r"already holds a run .*Continue it with ckpt_path=last"):
        resolve_checkpoint(None, tmp_path)
    assert saved.is_file()  # untouched

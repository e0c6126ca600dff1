"""Schedules of hyperparameters: their values, where the module sets them, and exact resume."""

from __future__ import annotations

import csv
from functools import partial
from pathlib import Path

import pytest
import torch
from helpers import run, same_tensors

from gan_template.schedule import (
    Cosine,
    Linear,
    ScheduledHyperparameters,
    check_range,
    param_group_setter,
    split_optimizer_schedules,
)


def test_cosine_and_linear_values_with_and_without_warmup() -> None:
    cosine = Cosine(start=1.0, end=0.0, iterations=100)
    assert [cosine(i) for i in (0, 50, 100, 500)] == pytest.approx([1.0, 0.5, 0.0, 0.0])
    assert cosine(25) == pytest.approx(0.5 * (1 + 2**-0.5))  # (1 + cos(pi / 4)) / 2
    linear = Linear(start=1.0, end=0.0, iterations=110, warmup=10, warmup_start=0.2)
    assert [linear(i) for i in (0, 5, 10, 60, 110)] == pytest.approx([0.2, 0.6, 1.0, 0.5, 0.0])


def test_schedules_check_their_arguments_and_ranges_cover_every_value() -> None:
    with pytest.raises(ValueError, match="warmup=10: must be in"):
        Linear(start=1.0, end=0.0, iterations=10, warmup=10)
    check_range("decay", Cosine(start=0.9, end=0.999, iterations=10), low=0.0, high=1.0)
    with pytest.raises(ValueError, match=r"reaches 1: must be in \[0, 1\)"):
        check_range(
            "decay", Cosine(start=0.9, end=1.0, iterations=10), low=0, high=1, high_inclusive=False
        )


def test_optimizer_schedules_are_split_off_and_set_in_every_param_group() -> None:
    beta2 = Cosine(start=0.9, end=0.99, iterations=10)
    factory = partial(
        torch.optim.Adam, lr=Linear(start=1e-3, end=0.0, iterations=10), betas=[0, beta2]
    )
    resolved, schedules = split_optimizer_schedules(factory)
    assert set(schedules) == {"lr", "betas.1"} and schedules["betas.1"] is beta2
    optimizer = resolved([torch.nn.Parameter(torch.zeros(2))])
    assert optimizer.param_groups[0]["betas"] == (0.0, 0.9)  # floats, as torch requires
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    bound = ScheduledHyperparameters()
    for key, schedule in schedules.items():
        bound.bind_setter(f"optim.generator.{key}", schedule, param_group_setter(optimizer, key))
    bound.apply(10)
    assert optimizer.param_groups[0]["betas"] == pytest.approx((0.0, 0.99))
    assert optimizer.param_groups[0]["lr"] == 0.0
    assert bound.values == pytest.approx(
        {"optim.generator.lr": 0.0, "optim.generator.betas.1": 0.99}
    )


def test_a_scheduled_attribute_of_a_part_holds_the_value_of_the_iteration() -> None:
    from gan_template.penalties import R1

    penalty = R1(weight=Cosine(start=2.0, end=0.0, iterations=4), interval=1)
    bound = ScheduledHyperparameters()
    bound.bind("penalty", penalty)
    assert penalty.weight == 2.0  # a plain number from binding on
    bound.apply(2)
    assert penalty.weight == pytest.approx(1.0) and bound.values == {
        "penalty.weight": penalty.weight
    }
    assert len(bound) == 1 and not len(ScheduledHyperparameters())


SCHEDULED = [
    "experiment=ring",
    "penalty=r1",
    "penalty.interval=2",
    "penalty.weight={_target_: gan_template.schedule.Cosine, start: 1.0, end: 0.01, iterations: 20}",
    "optim.discriminator.betas=[0.5, {_target_: gan_template.schedule.Linear, start: 0.9, end: 0.99, iterations: 20}]",
    "ema.decay={_target_: gan_template.schedule.Linear, start: 0.5, end: 0.9, iterations: 20}",
    "ema.rampup=null",
    "callbacks.toy_eval.every_n_iterations=0",
    "data.num_samples=2048",  # 8 batches an epoch: the runs cross epoch boundaries
    "trainer.deterministic=true",
]  # fmt: skip


def test_a_run_with_schedules_resumes_bit_for_bit_and_logs_them(
    make_config, tmp_path: Path
) -> None:
    straight, first, resumed = tmp_path / "straight", tmp_path / "first", tmp_path / "resumed"
    module = run(make_config(*SCHEDULED, "train.iterations=20", run_dir=straight))["module"]
    run(make_config(*SCHEDULED, "train.iterations=10", run_dir=first))
    ckpt = first / "checkpoints" / "last.ckpt"
    run(make_config(*SCHEDULED, "train.iterations=20", f"ckpt_path={ckpt}", run_dir=resumed))

    expected, actual = (
        torch.load(d / "checkpoints" / "last.ckpt", weights_only=False) for d in (straight, resumed)
    )
    for key, value in expected["state_dict"].items():
        assert torch.equal(value, actual["state_dict"][key]), key
    assert same_tensors(expected["optimizer_states"], actual["optimizer_states"])

    # The last iteration's values, where each part reads them.
    assert module.penalty.weight == pytest.approx(Cosine(start=1.0, end=0.01, iterations=20)(19))
    assert module.generator_ema.decay == pytest.approx(0.5 + 0.4 * 19 / 20)
    optimizer_d = module.optimizers()[1].optimizer
    assert optimizer_d.param_groups[0]["betas"] == pytest.approx((0.5, 0.9 + 0.09 * 19 / 20))
    # Logged at log steps as train/hp/<key>: the value the logged iteration trained with
    # (the row of step s is iteration s - 1, counted from 0).
    with open(resumed / "metrics.csv") as file:
        rows = [row for row in csv.DictReader(file) if row.get("train/hp/penalty.weight")]
    logged = {int(row["step"]): float(row["train/hp/penalty.weight"]) for row in rows}
    schedule = Cosine(start=1.0, end=0.01, iterations=20)
    assert set(logged) == set(range(11, 21))
    assert logged == pytest.approx({step: schedule(step - 1) for step in logged})
    betas = {int(r["step"]): float(r["train/hp/optim.discriminator.betas.1"]) for r in rows}
    assert betas[20] == pytest.approx(0.9 + 0.09 * 19 / 20)

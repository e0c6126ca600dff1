"""The speed benchmark compares like with like, and its documented command runs.

``benchmarks/vs_plain_loop.py`` times the template against a plain PyTorch loop
written in the benchmark; the ratio means something only if that loop makes the
template's updates. Here the plain loop is fed the template's batches and
random streams from the template's starting weights, and must end where the
template ended: generator, discriminator and EMA, to float tolerance.
"""

from __future__ import annotations

import importlib.util
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import lightning as L
import pytest
import torch
from helpers import run
from lightning.pytorch.callbacks import Callback

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` (a folder of scripts, not a package)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))  # as when run as a script: they import each other
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as an import does: dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


class TemplateInputs(Callback):
    """The starting weights, and every batch with the random state it started from."""

    def __init__(self) -> None:
        self.initial: dict[str, torch.Tensor] = {}
        self.batches: list[torch.Tensor] = []
        self.rng_states: list[torch.Tensor] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.initial = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # Callbacks' hooks run before the module's, and the module's draw nothing.
        self.batches.append(batch[0].clone())
        self.rng_states.append(torch.get_rng_state())


def replay(gan: Any, inputs: TemplateInputs) -> dict[str, torch.Tensor]:
    """Run the plain loop from the template's start on its batches; its final weights."""
    gan.module.load_state_dict(inputs.initial)  # G, D and the EMA are its submodules
    steps = zip(inputs.batches, inputs.rng_states, strict=True)
    for iteration, (batch, rng_state) in enumerate(steps, start=1):
        torch.set_rng_state(rng_state)  # the same latent draws
        gan.iteration(batch, iteration)
    return gan.module.state_dict()


@pytest.mark.parametrize(
    ("recipe", "extra"),
    [
        ("toy", []),
        ("toy", ["train.n_critic=3"]),
        ("dcgan32", ["data.batch_size=8"]),
        ("resnet16", ["data.batch_size=8"]),
    ],
    ids=["toy", "toy-n_critic-3", "dcgan32", "resnet16"],
)
def test_plain_loop_makes_the_templates_updates(
    tmp_path: Path, recipe: str, extra: list[str]
) -> None:
    bench = load_benchmark("vs_plain_loop")
    cfg = bench.compose(recipe, "cpu", "32-true", 4, tmp_path / "run", extra)
    inputs = TemplateInputs()
    template = run(cfg, inputs)["module"]
    assert template.iteration == 4 and len(inputs.batches) == 4

    plain = replay(bench.PlainGAN(cfg, "cpu"), inputs)
    ended = template.state_dict()
    assert ended.keys() == plain.keys()
    assert any(not torch.equal(inputs.initial[k], ended[k]) for k in ended), "nothing trained"
    for name in ended:
        torch.testing.assert_close(plain[name], ended[name], rtol=1e-5, atol=1e-6, msg=name)


def test_plain_loop_differs_when_the_algorithm_does(tmp_path: Path) -> None:
    """The comparison above can fail: one more critic update in the plain loop shows."""
    bench = load_benchmark("vs_plain_loop")
    cfg = bench.compose("toy", "cpu", "32-true", 2, tmp_path / "run", [])
    inputs = TemplateInputs()
    template = run(cfg, inputs)["module"]
    gan = bench.PlainGAN(cfg, "cpu")
    gan.n_critic = 2  # the batch split in two: not the template's algorithm
    plain, ended = replay(gan, inputs), template.state_dict()
    assert any(not torch.allclose(plain[k], ended[k]) for k in ended)


def benchmark(tmp_path: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``benchmarks/<script>.py`` as its README says, from an unrelated folder."""
    command = [sys.executable, str(BENCHMARKS / f"{script}.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)


def test_documented_command_runs_every_kind_and_the_profile(tmp_path: Path) -> None:
    small = ["--recipe", "toy", "--iterations", "10", "--warmup", "2"]
    table = benchmark(tmp_path, "vs_plain_loop", *small, "--repeats", "1", "--in-process")
    assert table.returncode == 0, table.stderr[-3000:]
    rows = {line.split()[0]: line.split() for line in table.stdout.splitlines() if line.strip()}
    for kind in load_benchmark("vs_plain_loop").KINDS:
        assert kind in rows, table.stdout
        ms, samples_per_s, s_per_kimg = map(float, rows[kind][1:4])
        assert ms > 0 and samples_per_s > 0 and s_per_kimg > 0
    ratios = [field for field in rows["plain"] if field.endswith("x")]  # time, memory / plain
    assert ratios[0] == "1.000x"

    profiled = benchmark(tmp_path, "vs_plain_loop", *small, "--profile", "template")
    assert profiled.returncode == 0, profiled.stderr[-3000:]
    assert "gan_template/module.py" in profiled.stdout
    assert "training_step)" in profiled.stdout
    assert "Lightning's batch loop outside training_step:" in profiled.stdout


SMALL = ["--iterations", "10", "--warmup", "2", "--repeats", "1"]


@pytest.mark.slow  # 10 s; the documented vs_plain_loop command stays in the default suite
def test_fast_paths_runs(tmp_path: Path) -> None:
    fast = benchmark(tmp_path, "fast_paths", "--recipe", "toy", *SMALL, "--only", "foreach Adam")
    assert fast.returncode == 0, fast.stderr[-3000:]
    assert re.search(r"^foreach Adam .* \d+\.\d+x ", fast.stdout, re.MULTILINE), fast.stdout


@pytest.mark.ddp
@pytest.mark.slow  # four DDP runs of two processes each, about 45 s
def test_ddp_cost_runs(tmp_path: Path) -> None:
    ddp = benchmark(tmp_path, "ddp_cost", *SMALL)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "skip agreement (with / without):" in ddp.stdout


@pytest.mark.parametrize("script", ["vs_plain_loop", "fast_paths", "ddp_cost"])
def test_too_few_iterations_to_time_is_refused(tmp_path: Path, script: str) -> None:
    refused = benchmark(tmp_path, script, "--iterations", "10", "--warmup", "10")
    assert refused.returncode == 2
    assert "--iterations 10 must" in refused.stderr and "--warmup" in refused.stderr


def test_the_robustness_study_reuses_finished_runs_and_summarises_over_seeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interrupted study started again reruns only what changed (its overrides, or the config
    its recipe composes to); the table is mean ± std."""
    study = load_benchmark("robustness_study")
    ran: list[list[str]] = []

    def training_run(overrides: list[str], run_dir: Path, section: str) -> dict:
        ran.append(overrides)
        run_dir.mkdir(parents=True)  # as the real run, never into an old run
        return {"fid": 10.0 + len(ran), "recall": 0.5, "seconds": 1.0}

    monkeypatch.setattr(study, "training_run", training_run)
    first = study.run_once("colour/dcgan_seed0", ["experiment=dcgan", "seed=0"], tmp_path)
    again = study.run_once("colour/dcgan_seed0", ["experiment=dcgan", "seed=0"], tmp_path)
    assert again == first and len(ran) == 1  # read back, not run again
    other = study.run_once("colour/dcgan_seed0", ["experiment=dcgan", "seed=1"], tmp_path)
    assert len(ran) == 2 and other["fid"] == 12.0  # other overrides: run afresh
    assert len(list((tmp_path / "colour").glob("dcgan_seed0.replaced-*"))) == 1  # kept
    # The recipe changed since the run (as if conf/experiment/dcgan.yaml had another lr).
    record = tmp_path / "colour" / "dcgan_seed0" / "study.json"
    kept = json.loads(record.read_text())
    kept["config"] = study.composed_config(["experiment=dcgan", "optim.generator.lr=1e-3"])
    record.write_text(json.dumps(kept))
    changed = study.run_once("colour/dcgan_seed0", ["experiment=dcgan", "seed=1"], tmp_path)
    assert len(ran) == 3 and changed["fid"] == 13.0
    assert sorted(p.name for p in (tmp_path / "colour").iterdir()) == [
        "dcgan_seed0", "dcgan_seed0.replaced-1", "dcgan_seed0.replaced-2"
    ]  # fmt: skip
    table = study.summary(
        {"colour": {"dcgan": [{"fid": 10.0, "recall": 0.8}, {"fid": 12.0, "recall": 0.9}]}}, ""
    )
    assert "| dcgan | 11.0 ± 1.4 | 0.85 ± 0.07 |" in table


def test_recall_sources_tells_samples_off_the_data_from_coverage() -> None:
    """Recall made by outliers shows as a lower recall of the samples on the data; a dropped
    class as one class's recall; a faithful set as neither."""
    sources = load_benchmark("recall_sources")
    g = torch.Generator().manual_seed(0)
    real = torch.randn(400, 4, generator=g)
    labels = (real[:, 0] > 0).long()
    faithful = sources.recall_sources(real, torch.randn(1600, 4, generator=g), 300, 3, labels)
    assert (
        abs(statistics.mean(faithful.recall_random) - statistics.mean(faithful.recall_on_data))
        < 0.03
    )
    assert min(faithful.recall_per_class) > 0.9 and 0.9 < faithful.spread < 1.1
    # A narrow core on the data and a fifth of the samples spread past it.
    core, wide = 0.5 * torch.randn(1280, 4, generator=g), 2.5 * torch.randn(320, 4, generator=g)
    mixed = torch.cat([core, wide])[torch.randperm(1600, generator=g)]
    outliers = sources.recall_sources(real, mixed, 300, 3, labels)
    assert statistics.mean(outliers.recall_random) - statistics.mean(outliers.recall_on_data) > 0.06
    assert outliers.spread < 0.7  # most samples sit tighter than the data
    one_class = torch.randn(4000, 4, generator=g)
    dropped = sources.recall_sources(real, one_class[one_class[:, 0] < 0][:1600], 300, 3, labels)
    assert dropped.recall_per_class[0] > 0.9 and dropped.recall_per_class[1] < 0.4
    with pytest.raises(ValueError, match="lie on the data: use a smaller --m"):
        sources.recall_sources(real, torch.randn(400, 4, generator=g) + 50, 10, 1, labels)


def test_recall_sources_reads_a_checkpoint(digits_run: dict, capsys: pytest.CaptureFixture) -> None:
    sources = load_benchmark("recall_sources")
    ckpt = str(Path(digits_run["run_dir"]) / "checkpoints" / "last.ckpt")
    (result,) = sources.main([ckpt, "--m", "50", "--repeats", "2", "--samples-per-real", "1"])
    assert len(result.recall_per_class) == 10  # the digits' labels, aligned with their features
    assert 0 <= statistics.mean(result.recall_on_data) <= 1 and result.spread > 0
    assert f"{ckpt}: P {result.precision:.3f} R {result.recall:.3f}" in capsys.readouterr().out

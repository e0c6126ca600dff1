"""The template against a plain PyTorch loop running the same GAN algorithm.

    python benchmarks/vs_plain_loop.py --recipe toy     # MLP on the ring, batch 256
    python benchmarks/vs_plain_loop.py --recipe dcgan32 # DCGAN 32 px on digits, batch 64
    python benchmarks/vs_plain_loop.py --recipe dcgan64 --device cuda --precision bf16-mixed

(A) is ``GANModule`` under the Lightning Trainer, built from the config exactly
as ``python -m gan_template`` builds it (evaluation callbacks off, checkpoints
off, logging every 50 iterations). (B) is a loop written here that makes the
same updates on the same networks, data and batch size: n_critic D updates with
fresh real batches, one G update reusing the last fake batch with D frozen,
the generator EMA; and nothing else (no skip checks, no gradient norms, no
logging). ``tests/test_benchmarks.py`` checks that (B), fed (A)'s batches and
random draws, ends at (A)'s weights.

Three more rows split the difference, from (B) up to (A):

- "loop": (B)'s iteration, with torch's own ``backward()`` and optimizers, as
  the ``training_step`` of a minimal LightningModule under the same Trainer
  settings and data module (no logger, no callbacks but the timer): its
  distance to (B) is Lightning's batch loop (data fetching, hooks, progress
  bookkeeping). Valid where no gradient scaler is needed (not 16-mixed).
- "lightning": the same with ``manual_backward`` and Lightning's optimizer
  wrappers, as a manual-optimization module must use them (precision plugins,
  strategies): its distance to "loop" is what those wrappers and the hooks
  they call cost.
- "unchecked": (A) with the skip rule's checks off
  (``skip.check_losses=false skip.check_gradients=false``): its distance to (A)
  is what the safety checks cost; its distance to "lightning" the template's
  other work (metrics, EMA, counters, logging).

``--overrides`` adds Hydra overrides to every run (for example
``optim.generator.foreach=true``). ``--profile KIND`` runs one kind under
cProfile and lists the Lightning and template functions called on every
iteration, with their time per iteration: the profile behind the rows.

Each run is a fresh subprocess, so peak memory is its own; the kinds alternate
``--repeats`` times. With ``--in-process`` all runs share this one process:
far less noise between runs on a busy machine, but no peak memory per kind.

Reported: median seconds per iteration (wall time between consecutive
iterations after a warm-up, data loading included), the real samples (images)
consumed per second, the ratio A/B, and peak memory (resident set on CPU, max
allocated on CUDA).
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from child import run_child

KINDS = ("template", "unchecked", "published", "lightning", "loop", "plain")

RECIPES = {
    # Unpacked D (model.discriminator.pack=1): the configuration the figures were measured with.
    "toy": ["experiment=ring", "data.batch_size=256", "model.discriminator.pack=1"],
    "dcgan32": ["experiment=dcgan", "data.resolution=32", "data.batch_size=64"],
    "dcgan64": ["experiment=dcgan", "data.resolution=64", "data.batch_size=128"],
    # experiment=sngan's networks and n_critic (digits 16 px) under the non-saturating loss
    # the plain loop implements, so that both run one algorithm.
    "resnet16": [
        "experiment=dcgan",
        "model=resnet",
        "model.generator.width=64",
        "model.discriminator.width=64",
        "train.n_critic=5",
    ],
    # The networks of Lightning's GAN example, on digits at 32 px, as in that example.
    "mlp32": [
        "experiment=dcgan",
        "model=mlp_image",
        "data.resolution=32",
        "data.batch_size=64",
        "ema=none",
    ],
}


UNCHECKED = ["skip.check_losses=false", "skip.check_gradients=false"]

#: Iterations of the extra, untimed run of each kind that counts host syncs.
SYNC_ITERATIONS = 60


def compose(
    recipe: str,
    device: str,
    precision: str,
    iterations: int,
    run_dir: Path,
    extra: list[str] | None = None,
) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from gan_template.__main__ import CONFIG_DIR

    overrides = [
        *RECIPES[recipe],
        f"train.iterations={iterations}",
        f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}",
        f"trainer.precision={precision}",
        f"trainer.benchmark={device == 'cuda'}",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "trainer.log_every_n_steps=50",
        "callbacks.checkpoint.every_n_iterations=0",
        f"paths.run_dir={run_dir}",
        *(extra or []),
    ]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose("config", overrides=overrides)
    from omegaconf import open_dict

    with open_dict(cfg):
        for name in ("toy_eval", "image_eval", "sample_grid", "checkpoint"):
            cfg.callbacks.pop(name, None)
    return cfg


def peak_memory(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux reports KiB)


class Clock:
    """Time stamps at the end of every iteration; the result is the median interval.

    With a ``HostSyncCounter`` it also records the host syncs of each iteration
    (a counted run is slower: its times are not reported).
    """

    def __init__(self, device: str, syncs: Any = None) -> None:
        self.device = device
        self.stamps: list[float] = []
        self.syncs = syncs
        self.sync_totals: list[int] = []

    def tick(self) -> None:
        if self.syncs is not None:
            self.sync_totals.append(self.syncs.total)
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()  # the iteration's kernels have finished
        self.stamps.append(time.perf_counter())

    def callback(self, stop_after: int | None = None) -> Any:
        """A Lightning callback that ticks after every batch (and stops after ``stop_after``)."""
        from lightning.pytorch.callbacks import Callback

        clock = self

        class Tick(Callback):
            def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
                clock.tick()
                if stop_after is not None and len(clock.stamps) >= stop_after:
                    trainer.should_stop = True

        return Tick()

    def result(self, warmup: int) -> dict[str, float]:
        steps = [b - a for a, b in itertools.pairwise(self.stamps[warmup:])]
        if not steps:
            raise ValueError(
                f"{len(self.stamps)} iterations ran, none timed after a warm-up of {warmup}: "
                "raise --iterations above --warmup + 1"
            )
        result = {"median_s": statistics.median(steps), "peak_mib": peak_memory(self.device)}
        if self.syncs is not None:
            per_iteration = [b - a for a, b in itertools.pairwise(self.sync_totals[warmup:])]
            result["syncs_median"] = statistics.median(per_iteration)
            result["syncs_mean"] = statistics.fmean(per_iteration)
        return result


def run_template(cfg: Any, warmup: int, clock: Clock) -> dict[str, float]:
    from gan_template.harness.train import train

    train(cfg, extra_callbacks=[clock.callback()])
    return clock.result(warmup)


class PlainGAN:
    """The networks, optimizers and EMA of a config, and one iteration of the plain loop."""

    def __init__(self, cfg: Any, device: str) -> None:
        import torch
        from hydra.utils import instantiate

        from gan_template.harness.train import build_module

        torch.manual_seed(cfg.seed)
        self.module = build_module(cfg)  # the same networks, initialised the same way
        self.G = self.module.generator.to(device)
        self.D = self.module.discriminator.to(device)
        ema = self.module.generator_ema
        self.ema = ema.module.to(device) if ema is not None else None
        self.opt_g = instantiate(cfg.optim.generator)(self.G.parameters())
        self.opt_d = instantiate(cfg.optim.discriminator)(self.D.parameters())
        self.n_critic, self.device = cfg.train.n_critic, device
        self.autocast = torch.autocast(
            device, dtype=torch.bfloat16, enabled=cfg.trainer.precision == "bf16-mixed"
        )

    def iteration(
        self,
        real_all: Any,
        iteration: int,
        backward: Any = None,
        opt_g: Any = None,
        opt_d: Any = None,
    ) -> None:
        """n_critic D updates, one G update, the EMA: nothing else."""
        import torch
        import torch.nn.functional as F

        G, D, autocast = self.G, self.D, self.autocast
        backward = backward or (lambda loss: loss.backward())
        opt_g, opt_d = opt_g or self.opt_g, opt_d or self.opt_d
        for k, real in enumerate(real_all.chunk(self.n_critic)):
            z = torch.randn(real.shape[0], self.module.latent_dim, device=real.device)
            with autocast, torch.set_grad_enabled(k == self.n_critic - 1):
                fake = G(z)
            with autocast:  # fake is detached: G is not in this graph, nothing to freeze
                loss_d = F.softplus(-D(real)).mean() + F.softplus(D(fake.detach())).mean()
            opt_d.zero_grad(set_to_none=True)
            backward(loss_d)
            opt_d.step()
        D.requires_grad_(False)  # no weight gradients for D in the generator's backward
        with autocast:
            loss_g = F.softplus(-D(fake)).mean()
        opt_g.zero_grad(set_to_none=True)
        backward(loss_g)
        opt_g.step()
        D.requires_grad_(True)
        if self.ema is not None:
            with torch.no_grad():
                weight = 1 - self.module.generator_ema.decay_at(iteration)
                torch._foreach_lerp_(list(self.ema.parameters()), list(G.parameters()), weight)
                for mine, theirs in zip(self.ema.buffers(), G.buffers(), strict=False):
                    mine.copy_(theirs)


def run_plain(cfg: Any, warmup: int, clock: Clock) -> dict[str, float]:
    import torch
    from hydra.utils import instantiate

    device = clock.device
    gan = PlainGAN(cfg, device)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    images = datamodule.dataset.tensors[0]
    per_iteration = cfg.train.n_critic * cfg.data.batch_size
    order = torch.randperm(len(images))
    position = 0
    for iteration in range(1, cfg.train.iterations + 1):
        if position + per_iteration > len(order):
            order, position = torch.randperm(len(images)), 0
        real_all = images[order[position : position + per_iteration]].to(device, non_blocking=True)
        position += per_iteration
        gan.iteration(real_all, iteration)
        clock.tick()
    return clock.result(warmup)


def minimal_trainer(cfg: Any, clock: Clock, **kwargs: Any) -> Any:
    """A Trainer with the template's settings, no callbacks but the clock's (``kwargs`` added)."""
    import lightning as L

    return L.Trainer(
        accelerator="gpu" if clock.device == "cuda" else "cpu",
        devices=1,
        precision=cfg.trainer.precision,
        benchmark=clock.device == "cuda",
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        max_epochs=-1,
        max_steps=-1,
        use_distributed_sampler=False,
        log_every_n_steps=cfg.trainer.log_every_n_steps,
        callbacks=[clock.callback(stop_after=cfg.train.iterations)],
        **kwargs,
    )


def run_lightning(cfg: Any, warmup: int, clock: Clock, wrappers: bool = True) -> dict[str, float]:
    """The plain loop's iteration as the training_step of a minimal LightningModule.

    Same Trainer settings and data module as the template, no logger and no
    callbacks but the timer: what Lightning's per-batch machinery costs by
    itself. ``wrappers``: backward through ``manual_backward`` and steps through
    Lightning's optimizer wrappers (else torch's own, the "loop" kind).
    """
    import lightning as L
    from hydra.utils import instantiate

    gan = PlainGAN(cfg, clock.device)

    class Minimal(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False
            self.G, self.D = gan.G, gan.D
            self.count = 0

        def configure_optimizers(self) -> Any:
            return [gan.opt_g, gan.opt_d]

        def training_step(self, batch: Any, batch_idx: int) -> None:
            self.count += 1
            if not wrappers:
                gan.iteration(batch[0], self.count)
                return
            opt_g, opt_d = self.optimizers()  # type: ignore[misc]
            gan.iteration(batch[0], self.count, self.manual_backward, opt_g, opt_d)

    trainer = minimal_trainer(cfg, clock, logger=False)
    trainer.fit(Minimal(), datamodule=instantiate(cfg.data))
    return clock.result(warmup)


def run_published(cfg: Any, warmup: int, clock: Clock) -> dict[str, float]:
    """Lightning's GAN example algorithm (``domain_templates/generative_adversarial_net.py``).

    As published: the generator phase first, the generator run three times per
    iteration (once kept for logging, once for G's loss, once for D's fake
    batch), ``toggle_optimizer`` around each phase, ``self.log(prog_bar=True)``
    of both losses on every step, a CSV logger, torch's default Adam, one
    discriminator update per iteration (n_critic is ignored). Its networks end
    in a sigmoid with binary cross-entropy; here they return logits and the
    loss is ``binary_cross_entropy_with_logits``, the same maths.
    """
    import lightning as L
    import torch
    import torch.nn.functional as F
    from hydra.utils import instantiate
    from lightning.pytorch.loggers import CSVLogger

    gan = PlainGAN(cfg, clock.device)
    adam = {"fused": None, "foreach": None}  # torch's default implementation, as published

    class Published(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False
            self.generator, self.discriminator = gan.G, gan.D

        def forward(self, z: Any) -> Any:
            return self.generator(z)

        def configure_optimizers(self) -> Any:
            return [
                instantiate(cfg.optim.generator, **adam)(self.generator.parameters()),
                instantiate(cfg.optim.discriminator, **adam)(self.discriminator.parameters()),
            ]

        def training_step(self, batch: Any, batch_idx: int) -> None:
            images = batch[0]
            optimizer_g, optimizer_d = self.optimizers()  # type: ignore[misc]
            z = torch.randn(images.shape[0], gan.module.latent_dim).type_as(images)
            real_label = torch.ones(images.shape[0]).type_as(images)
            fake_label = torch.zeros(images.shape[0]).type_as(images)

            self.toggle_optimizer(optimizer_g)
            self.generated_images = self(z)
            g_loss = F.binary_cross_entropy_with_logits(self.discriminator(self(z)), real_label)
            self.log("g_loss", g_loss, prog_bar=True)
            self.manual_backward(g_loss)
            optimizer_g.step()
            optimizer_g.zero_grad()
            self.untoggle_optimizer(optimizer_g)

            self.toggle_optimizer(optimizer_d)
            real_loss = F.binary_cross_entropy_with_logits(self.discriminator(images), real_label)
            fake_loss = F.binary_cross_entropy_with_logits(
                self.discriminator(self(z).detach()), fake_label
            )
            d_loss = (real_loss + fake_loss) / 2
            self.log("d_loss", d_loss, prog_bar=True)
            self.manual_backward(d_loss)
            optimizer_d.step()
            optimizer_d.zero_grad()
            self.untoggle_optimizer(optimizer_d)

    logger = CSVLogger(Path(cfg.paths.run_dir) / "published")  # removed with the run directory
    trainer = minimal_trainer(cfg, clock, logger=logger)
    trainer.fit(Published(), datamodule=instantiate(cfg.data))
    return clock.result(warmup)


def measure(kind: str, args: argparse.Namespace, count_syncs: bool = False) -> dict[str, float]:
    """One run of ``kind`` in this process; ``count_syncs``: count host syncs (times not valid)."""
    import tempfile
    from contextlib import nullcontext

    import torch

    from gan_template.harness.environment import avoid_per_step_gpu_probing
    from gan_template.harness.host_syncs import HostSyncCounter

    # `import lightning` (which every kind does, through gan_template) makes torch
    # probe NVML on every Adam.step of a GPU-less machine; train() turns that off,
    # and so must every kind here, or the plain loop pays a cost it would not have.
    avoid_per_step_gpu_probing()
    # The template's runs get trainer.benchmark=true; Lightning sets the flag per run.
    torch.backends.cudnn.benchmark = args.device == "cuda"
    extra = [*args.overrides, *(UNCHECKED if kind == "unchecked" else [])]
    iterations, warmup = (SYNC_ITERATIONS, 1) if count_syncs else (args.iterations, args.warmup)
    syncs = HostSyncCounter() if count_syncs else None
    clock = Clock(args.device, syncs)
    with tempfile.TemporaryDirectory(prefix="vs_plain_") as run_dir, syncs or nullcontext():
        cfg = compose(args.recipe, args.device, args.precision, iterations, Path(run_dir), extra)
        if kind == "plain":
            result = run_plain(cfg, warmup, clock)
        elif kind in ("lightning", "loop"):
            result = run_lightning(cfg, warmup, clock, wrappers=kind == "lightning")
        elif kind == "published":
            result = run_published(cfg, warmup, clock)
        else:
            result = run_template(cfg, warmup, clock)
    # Real samples (images, or points for the toy) consumed per iteration.
    return {**result, "samples_per_iteration": cfg.train.n_critic * cfg.data.batch_size}


def profile(kind: str, args: argparse.Namespace, top: int = 30) -> None:
    """Run ``kind`` once under cProfile; list the per-iteration Lightning and template calls.

    Shown: functions from ``lightning/``, ``gan_template/`` and this script
    called at least once per iteration, by cumulative time per iteration (a
    function's own time plus its callees', torch's included), and the time
    Lightning's batch loop spends outside the module's ``training_step``.
    cProfile slows Python code more than the kernels it calls, so these are
    larger than the real costs: read them for where the time goes, and the
    timed rows for how much.
    """
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    measure(kind, args)
    profiler.disable()
    stats: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    rows = []  # (cumulative s, own s, calls, short path, line, function)
    for (path, line, function), (_, calls, own, cumulative, _) in stats.items():
        path = path.replace("\\", "/")
        for package in ("lightning/", "gan_template/", "vs_plain_loop"):
            if package in path and calls >= args.iterations:
                rows.append((cumulative, own, calls, path[path.index(package) :], line, function))
                break
    rows.sort(reverse=True)

    def cumulative_of(path_end: str, function: str) -> float:
        found = (r[0] for r in rows if r[3].endswith(path_end) and r[5] == function)
        return next(found, 0.0)

    per = 1e6 / args.iterations  # seconds in total -> microseconds per iteration
    print(f"--profile {kind}: {args.iterations} iterations, microseconds per iteration")
    print(f"{'cumulative':>11} {'own':>8} {'calls':>6}  function")
    for cumulative, own, calls, path, line, function in rows[:top]:
        print(f"{cumulative * per:>11.1f} {own * per:>8.1f} {calls / args.iterations:>6.1f}  "
              f"{path}:{line}({function})")  # fmt: skip
    batch = cumulative_of("loops/training_epoch_loop.py", "advance")  # one whole batch
    step = cumulative_of("strategies/strategy.py", "training_step")  # the module's step
    print(
        f"Lightning's batch loop outside training_step: {(batch - step) * per:.0f} us "
        f"of {batch * per:.0f} us per iteration (profiled)"
    )


def refuse_untimeable(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with a usage error unless two iterations end after the warm-up (one interval)."""
    if args.iterations < args.warmup + 2:
        parser.error(f"--iterations {args.iterations} must be at least --warmup + 2")


def worker(args: argparse.Namespace) -> None:
    print(json.dumps(measure(args.worker, args, count_syncs=args.count_syncs)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="toy")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--iterations", type=int, default=600)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--overrides", nargs="*", default=[], help="Hydra overrides for all runs")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run every kind in this one process (less noise between runs; no peak memory)",
    )
    parser.add_argument(
        "--profile",
        choices=KINDS,
        help="run this kind once under cProfile and list where its time goes",
    )
    parser.add_argument(
        "--kinds", nargs="+", choices=KINDS, default=list(KINDS), help="the rows to run"
    )
    parser.add_argument("--worker", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--count-syncs", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    refuse_untimeable(parser, args)
    if args.worker:
        return worker(args)
    if args.profile:
        return profile(args.profile, args)

    kinds = [kind for kind in KINDS if kind in args.kinds or kind == "plain"]

    def one_run(kind: str, count_syncs: bool = False) -> dict[str, float]:
        if args.in_process:
            return {**measure(kind, args, count_syncs), "peak_mib": float("nan")}
        command = [sys.executable, __file__, "--worker", kind, *sys.argv[1:]]
        output = run_child(command + (["--count-syncs"] if count_syncs else []))
        return json.loads(output.strip().splitlines()[-1])

    results: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
    for _ in range(args.repeats):
        for kind in kinds:  # alternate the runs
            results[kind].append(one_run(kind))
    syncs = {kind: one_run(kind, count_syncs=True) for kind in kinds}
    median = {k: statistics.median(r["median_s"] for r in v) for k, v in results.items()}
    # Ratios of runs made side by side, then their median: robust to the
    # machine's load drifting between repeats.
    pairs = {
        kind: [
            a["median_s"] / b["median_s"]
            for a, b in zip(results[kind], results["plain"], strict=True)
        ]
        for kind in kinds
    }
    paired = {kind: statistics.median(ratios) for kind, ratios in pairs.items()}
    peak = {k: statistics.median(r["peak_mib"] for r in v) for k, v in results.items()}
    print(
        f"recipe={args.recipe} device={args.device} precision={args.precision} "
        f"repeats={args.repeats} overrides={args.overrides}"
    )
    per_iteration = results["plain"][0]["samples_per_iteration"]
    print(f"{'':<10} {'ms / iteration':>15} {'samples / s':>12} {'s / kimg':>9} {'peak MiB':>10} {'time / plain':>13} {'memory / plain':>15} {'syncs / it':>11} {'(mean)':>7} {'paired ratios min-max':>22}")  # fmt: skip
    for kind in kinds:
        print(
            f"{kind:<10} {1000 * median[kind]:>15.3f} {per_iteration / median[kind]:>12.0f} "
            f"{1000 * median[kind] / per_iteration:>9.3f} "
            f"{peak[kind]:>10.1f} {paired[kind]:>12.3f}x {peak[kind] / peak['plain']:>14.3f}x "
            f"{syncs[kind]['syncs_median']:>11.0f} {syncs[kind]['syncs_mean']:>7.2f} "
            f"{min(pairs[kind]):>14.3f}-{max(pairs[kind]):.3f}"
        )
    print(
        "time / plain: median over repeats of (this run / the plain run next to it); "
        "the last column: the smallest and largest of those ratios (the spread)"
    )
    print(
        f"syncs / it: host reads of device values per iteration (median, and mean with the "
        f"logging iterations), from one extra counted run of {SYNC_ITERATIONS} iterations"
    )
    print(
        f"samples / s: real samples (images, toy points) consumed, {per_iteration} per iteration; "
        "s / kimg: seconds per thousand of them (stylegan2-ada's unit)"
    )


if __name__ == "__main__":
    main()

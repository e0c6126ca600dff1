"""The template against a plain PyTorch loop running the same GAN algorithm.

    python benchmarks/vs_plain_loop.py --recipe toy     # MLP on the ring, batch 256
    python benchmarks/vs_plain_loop.py --recipe dcgan32 # DCGAN 32 px on digits, batch 64
    python benchmarks/vs_plain_loop.py --recipe dcgan64 --device cuda --precision bf16-mixed

(A) is ``GANModule`` under the Lightning Trainer, built from the config exactly
as ``python -m gan_template`` builds it (evaluation callbacks off, checkpoints
off, logging every 50 iterations). (B) is a loop written here that makes the
same updates on the same networks, data and batch size: n_critic D updates with
fresh real batches, one G update reusing the last fake batch, requires_grad
toggling, the generator EMA; and nothing else (no skip checks, no gradient
norms, no logging).

A third row, "unchecked", is (A) with the skip rule's checks off
(``skip.check_losses=false skip.check_gradients=false``): the difference to
(A) is what the safety checks cost, the difference to (B) what Lightning and
the rest of the template cost. ``--overrides`` adds Hydra overrides to every
run (for example ``optim.generator.foreach=true``).

Each run is a fresh subprocess (so peak memory is its own); A and B alternate
``--repeats`` times. Reported: median seconds per iteration (wall time between
consecutive iterations after a warm-up, data loading included), the ratio A/B,
and peak memory (resident set on CPU, max allocated on CUDA).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

KINDS = ("template", "unchecked", "plain")

RECIPES = {
    "toy": ["experiment=ring", "data.batch_size=256"],
    "dcgan32": ["experiment=dcgan", "data.resolution=32", "data.batch_size=64"],
    "dcgan64": ["experiment=dcgan", "data.resolution=64", "data.batch_size=128"],
}


UNCHECKED = ["skip.check_losses=false", "skip.check_gradients=false"]


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


def run_template(cfg: Any, warmup: int, device: str) -> dict[str, float]:
    import lightning as L
    from lightning.pytorch.callbacks import Callback

    from gan_template.train import train

    stamps: list[float] = []

    class Stamp(Callback):
        def on_train_batch_end(
            self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
        ) -> None:
            if device == "cuda":
                import torch

                torch.cuda.synchronize()
            stamps.append(time.perf_counter())

    original = L.Trainer.__init__

    def with_stamp(
        self: L.Trainer, *args: Any, callbacks: list | None = None, **kwargs: Any
    ) -> None:
        original(self, *args, callbacks=[*(callbacks or []), Stamp()], **kwargs)

    L.Trainer.__init__ = with_stamp  # type: ignore[method-assign]
    train(cfg)
    steps = [b - a for a, b in zip(stamps[warmup:], stamps[warmup + 1 :], strict=False)]
    return {"median_s": statistics.median(steps), "peak_mib": peak_memory(device)}


def run_plain(cfg: Any, warmup: int, device: str) -> dict[str, float]:
    import torch
    import torch.nn.functional as F
    from hydra.utils import instantiate

    from gan_template.train import build_module

    torch.manual_seed(cfg.seed)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    module = build_module(cfg)  # the same networks, initialised the same way
    G, D = module.generator.to(device), module.discriminator.to(device)
    ema = module.generator_ema.module.to(device) if module.generator_ema is not None else None
    opt_g = instantiate(cfg.optim.generator)(G.parameters())
    opt_d = instantiate(cfg.optim.discriminator)(D.parameters())
    images = datamodule.dataset.tensors[0]
    n_critic, batch = cfg.train.n_critic, cfg.data.batch_size
    autocast = torch.autocast(
        device, dtype=torch.bfloat16, enabled=cfg.trainer.precision == "bf16-mixed"
    )
    stamps: list[float] = []
    order = torch.randperm(len(images))
    position = 0
    for iteration in range(1, cfg.train.iterations + 1):
        if position + n_critic * batch > len(order):
            order, position = torch.randperm(len(images)), 0
        real_all = images[order[position : position + n_critic * batch]].to(
            device, non_blocking=True
        )
        position += n_critic * batch
        for k, real in enumerate(real_all.chunk(n_critic)):
            z = torch.randn(batch, G.latent_dim, device=device)
            with autocast, torch.set_grad_enabled(k == n_critic - 1):
                fake = G(z)
            D.requires_grad_(True)
            G.requires_grad_(False)
            with autocast:
                loss_d = F.softplus(-D(real)).mean() + F.softplus(D(fake.detach())).mean()
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
        D.requires_grad_(False)
        G.requires_grad_(True)
        with autocast:
            loss_g = F.softplus(-D(fake)).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        D.requires_grad_(True)
        if ema is not None:
            with torch.no_grad():
                weight = 1 - module.generator_ema.decay_at(iteration)
                torch._foreach_lerp_(list(ema.parameters()), list(G.parameters()), weight)
                for mine, theirs in zip(ema.buffers(), G.buffers(), strict=False):
                    mine.copy_(theirs)
        if device == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
    steps = [b - a for a, b in zip(stamps[warmup:], stamps[warmup + 1 :], strict=False)]
    return {"median_s": statistics.median(steps), "peak_mib": peak_memory(device)}


def worker(args: argparse.Namespace) -> None:
    import tempfile

    import torch

    if args.device == "cuda" and args.worker == "plain":
        torch.backends.cudnn.benchmark = True  # the template's runs get trainer.benchmark=true
    run_dir = Path(tempfile.mkdtemp(prefix="vs_plain_"))
    extra = [*args.overrides, *(UNCHECKED if args.worker == "unchecked" else [])]
    cfg = compose(args.recipe, args.device, args.precision, args.iterations, run_dir, extra)
    runner = run_plain if args.worker == "plain" else run_template
    print(json.dumps(runner(cfg, args.warmup, args.device)))


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
    parser.add_argument("--worker", choices=KINDS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    results: dict[str, list[dict[str, float]]] = {kind: [] for kind in KINDS}
    for _ in range(args.repeats):
        for kind in KINDS:  # alternate the runs
            command = [sys.executable, __file__, "--worker", kind, *sys.argv[1:]]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            results[kind].append(json.loads(output.strip().splitlines()[-1]))
    median = {k: statistics.median(r["median_s"] for r in v) for k, v in results.items()}
    # Ratios of runs made side by side, then their median: robust to the
    # machine's load drifting between repeats.
    paired = {
        kind: statistics.median(
            a["median_s"] / b["median_s"]
            for a, b in zip(results[kind], results["plain"], strict=True)
        )
        for kind in KINDS
    }
    peak = {k: statistics.median(r["peak_mib"] for r in v) for k, v in results.items()}
    print(
        f"recipe={args.recipe} device={args.device} precision={args.precision} "
        f"repeats={args.repeats} overrides={args.overrides}"
    )
    print(f"{'':<10} {'ms / iteration':>15} {'peak MiB':>10} {'time / plain':>13} {'memory / plain':>15}")  # fmt: skip
    for kind in KINDS:
        print(
            f"{kind:<10} {1000 * median[kind]:>15.3f} {peak[kind]:>10.1f} "
            f"{paired[kind]:>12.3f}x {peak[kind] / peak['plain']:>14.3f}x"
        )
    print("time / plain: median over repeats of (this run / the plain run next to it)")


if __name__ == "__main__":
    main()

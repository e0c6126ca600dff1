"""Build the data, the GAN module and the Trainer from a composed config, then fit.

The only module besides ``__main__`` that knows about Hydra/OmegaConf.
"""

from __future__ import annotations

import errno
import json
import logging
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeGuard

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.plugins import CheckpointIO
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, ProgressBar
from omegaconf import DictConfig, OmegaConf
from torch import nn

from gan_template import models
from gan_template.callbacks.periodic import FINAL_METRICS, EveryNIterations
from gan_template.harness.checkpoint_io import AtomicCheckpointIO, check_readable, write_atomically
from gan_template.harness.config import (
    constructor_problem,
    invalid_config,
    optimizer_names,
    validate,
)
from gan_template.harness.contracts import check_contracts
from gan_template.harness.distributed import end_process_group, is_lost_rank, lost_rank
from gan_template.harness.environment import avoid_per_step_gpu_probing
from gan_template.harness.errors import ConfigError, UserInputError, WriteError
from gan_template.harness.iteration_checkpoint import IterationCheckpoint
from gan_template.harness.resume import SHAPE_SECTIONS, config_changes, shape_mismatches
from gan_template.harness.stopping import StoppedBySignal
from gan_template.module import GANModule

log = logging.getLogger(__name__)


def build(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """``instantiate(node, **kwargs)``; a constructor that refuses its arguments is a setting to fix.

    A ``ValueError`` (or Lightning's ``MisconfigurationException``) raised by the
    constructor, or by a schedule nested in its arguments, becomes a
    :class:`ConfigError` naming the key (exit 2); a ``UserInputError`` (a logger
    that cannot reach its server) comes out as itself. Either way the command
    prints one message, not Hydra's "Error in call to target" and a traceback.
    """
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, UserInputError):
            raise cause from None
        if isinstance(cause, (ValueError, MisconfigurationException)):
            raise invalid_config([constructor_problem(key, error)]) from None
        raise


def network_names(cfg: DictConfig) -> list[str]:
    """The networks the config describes: every ``model.<name>`` that is a ``_target_`` node."""
    return [
        str(name)
        for name in cfg.model
        if isinstance(cfg.model.get(name), DictConfig) and "_target_" in cfg.model[name]
    ]


def build_networks(cfg: DictConfig, num_classes: int = 0) -> dict[str, nn.Module]:
    """Every network of ``model:`` by name (``generator``, ``discriminator``, any more)."""
    return {name: build_network(cfg, name, num_classes) for name in network_names(cfg)}


def build_network(cfg: DictConfig, which: str, num_classes: int = 0) -> nn.Module:
    """``model.<which>``; class-conditional when ``model.conditional``."""
    conditional = cfg.model.get("conditional", False)
    if conditional and num_classes < 1:
        raise ConfigError(
            f"model.conditional=true needs labelled data, but data.name={cfg.data.get('name')} "
            "has no class labels; set model.conditional=false"
        )
    extra = {"num_classes": num_classes} if conditional else {}
    return build(cfg.model[which], f"model.{which}", **extra)


def build_callbacks(cfg: DictConfig) -> list[Callback]:
    """The configured callbacks, every refused setting reported at once.

    Settings a callback only uses at its first evaluation are checked by its
    constructor, so a bad one stops the run before any training, not an hour in.
    """
    callbacks, problems = [], []
    for name, node in (cfg.callbacks or {}).items():
        if node is None:
            continue
        try:
            callbacks.append(instantiate(node))
        except InstantiationException as error:
            if not isinstance(error.__cause__, ValueError):
                raise
            problems.append(constructor_problem(f"callbacks.{name}", error))
    if problems:
        raise invalid_config(problems)
    return callbacks


def build_module(cfg: DictConfig, num_classes: int = 0) -> GANModule:
    """The GANModule the config's ``module:`` node describes (networks freshly initialised).

    The networks are built here, not by the node's interpolations, because a
    class-conditional network needs the data's number of classes.
    """
    module = build(cfg.module, "module", networks=build_networks(cfg, num_classes))
    if not isinstance(module, GANModule):
        raise ConfigError(
            f"module._target_={cfg.module._target_!r} builds a {type(module).__name__}; it must "
            "be gan_template.module.GANModule or a subclass of it"
        )
    # Stored in checkpoints so that gan_template.sample can rebuild the networks.
    module.save_hyperparameters({"run_config": OmegaConf.to_container(cfg, resolve=True)})
    return module


def check_memory(cfg: DictConfig, num_classes: int) -> None:
    """Refuse networks whose weights and optimizer state alone exceed the memory available.

    The networks are built on the meta device (no memory), so a typo such as
    ``data.resolution=2048`` is caught before it is allocated: an out-of-memory
    kill names nothing. Activations come on top, so passing is no guarantee.
    """
    with torch.device("meta"):
        networks = build_networks(cfg, num_classes)
        sizes = {which: sum(p.numel() for p in net.parameters()) for which, net in networks.items()}
        check_batch_fits(cfg, networks["generator"], networks["discriminator"])
    # 4-byte weights, gradients and two Adam moments; the generator's EMA and its sampling copy.
    copies = {name: 4 for name in sizes} | {"generator": 4 + (2 if cfg.ema is not None else 0)}
    needed = sum(4 * sizes[which] * copies[which] for which in sizes)
    available, where = available_memory(cfg)
    if available is not None and needed > 0.9 * available:
        counts = " and ".join(f"{size / 1e6:,.0f} M {name}" for name, size in sizes.items())
        raise ConfigError(
            f"the networks are too large for this machine: {counts} parameters "
            f"(model={cfg.model.generator._target_.rsplit('.', 1)[-1]}, "
            f"data.resolution={cfg.data.get('resolution')}) need {needed / 2**30:.1f} GiB for "
            f"weights, gradients, Adam and EMA state alone, and {where} has "
            f"{available / 2**30:.1f} GiB available; lower data.resolution or the model's width"
        )


def check_batch_fits(cfg: DictConfig, generator: nn.Module, discriminator: nn.Module) -> None:
    """A forward pass of both networks at the batch size of one update, on the meta device.

    No memory and no arithmetic: shapes only, so a batch the networks cannot take
    (BatchNorm needs two samples per channel, a packing discriminator a multiple
    of its pack) is named now, not by a traceback at the first step.
    """
    batch_size = cfg.data.get("batch_size")
    if not isinstance(batch_size, int) or getattr(generator, "latent_dim", None) is None:
        return  # an image-to-image generator: its shapes are checked by check_shapes
    z = torch.zeros(batch_size, models.latent_dim(generator))
    labels = torch.zeros(batch_size, dtype=torch.long) if models.num_classes(generator) else None
    try:
        fake = generator(z) if labels is None else generator(z, labels)
        discriminator(fake) if labels is None else discriminator(fake, labels)
    except ValueError as error:  # raised by the checks above; other errors are the first step's
        raise ConfigError(
            f"data.batch_size={batch_size}: the networks cannot take a batch of {batch_size} "
            f"({error}); raise data.batch_size"
        ) from None
    except (NotImplementedError, RuntimeError, TypeError):
        pass  # an operation without a meta kernel, a network called otherwise: nothing to conclude


def available_memory(cfg: DictConfig) -> tuple[int | None, str]:
    """Bytes the run can use: free GPU memory when it trains on a GPU, else the host's."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return torch.cuda.mem_get_info()[0], "the GPU"
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "this machine"
    except OSError:
        pass
    return None, "this machine"  # unknown (not Linux): no check


def check_shapes(module: GANModule, datamodule: L.LightningDataModule) -> None:
    """Fail at start-up, naming both values, when networks and data disagree."""
    data_shape = getattr(datamodule, "sample_shape", None)
    if data_shape is None:
        raise ConfigError(
            f"the data module {type(datamodule).__name__} has no `sample_shape` attribute; set "
            "self.sample_shape (the shape of one sample, e.g. (2,) or (3, 32, 32)) in its __init__"
        )
    for attribute, needed in module.data_shapes().items():
        given = getattr(datamodule, attribute, None)
        if given is None:
            raise ConfigError(
                f"{type(module).__name__} needs data with `{attribute}` (shape {needed}), and "
                f"the data module {type(datamodule).__name__} has none; choose data its task "
                "reads (the paired tasks: data=paired_digits or data=paired_folder)"
            )
        if tuple(given) != tuple(needed):
            what = "produces samples" if attribute == "sample_shape" else f"takes {attribute}"
            raise ConfigError(
                f"the generator {what} of shape {tuple(needed)} but the data "
                f"({type(datamodule).__name__}) has {attribute} {tuple(given)}; "
                "make model.* sizes match the data (images: model.*.channels/resolution follow "
                "data.channels/data.resolution unless overridden; MLPs: data_dim)"
            )


def resolve_checkpoint(ckpt_path: str | None, run_dir: Path) -> str | None:
    """The checkpoint to resume from; ``last`` means this run directory's ``checkpoints/last.ckpt``.

    ``auto`` resumes from it when it exists and starts afresh when not: one
    command for every start of a run that a launcher restarts (torchrun's
    ``--max-restarts``, a requeued SLURM job). Without ``ckpt_path``, a run
    directory that already holds ``last.ckpt`` is refused: nothing saved is
    overwritten by a second command given the same directory.
    """
    last = run_dir / "checkpoints" / "last.ckpt"
    if ckpt_path is None:
        if last.is_file():  # a fresh start would overwrite that run's checkpoints
            raise ConfigError(
                f"{run_dir} already holds a run ({last}); a new run there would overwrite "
                "its checkpoints. Continue it with ckpt_path=last (or ckpt_path=auto, which "
                "also starts afresh where there is none), or give the new run another "
                "directory (hydra.run.dir=<new dir>)"
            )
        return None
    if ckpt_path == "auto":
        if not (run_dir / "checkpoints" / "last.ckpt").is_file():
            log.info(f"ckpt_path=auto: no {run_dir}/checkpoints/last.ckpt yet, starting afresh")
            return None
        ckpt_path = "last"
    if ckpt_path == "last":
        path = run_dir / "checkpoints" / "last.ckpt"
        if not path.is_file():
            raise ConfigError(
                f"ckpt_path=last: {path} does not exist; `last` resumes the run whose directory "
                "this is, so pass that run's directory too (hydra.run.dir=<run dir>), or give "
                "ckpt_path=<path to a .ckpt>"
            )
        check_readable(path)
        return str(path)
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"ckpt_path={ckpt_path} does not exist; point it at a .ckpt file, for example "
            "<run dir>/checkpoints/last.ckpt (or ckpt_path=last with hydra.run.dir=<run dir>)"
        )
    check_readable(path)
    return str(path.resolve())


def check_resume(cfg: DictConfig, ckpt_path: str, num_classes: int) -> None:
    """Refuse a checkpoint whose tensors this config's networks cannot hold; report other changes.

    The module is built on the meta device (no memory, no initialisation), so
    its state dict gives every tensor's shape for free.
    """
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False, mmap=True)
    with torch.device("meta"):
        expected = build_module(cfg, num_classes=num_classes).state_dict()
    # A latent GAN's sample decoder comes from its data (data.autoencoder), not from model.*.
    networks = {
        key: value
        for key, value in checkpoint.get("state_dict", {}).items()
        if not key.startswith("sample_decoder.")
    }
    mismatches = shape_mismatches(networks, expected)
    saved = checkpoint.get("hyper_parameters", {}).get("run_config") or {}
    changes = config_changes(saved, OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    if mismatches:
        shaping = [
            f"{key}={old!r} in the checkpoint, {new!r} now"
            for key, (old, new) in changes.items()
            if key.startswith(SHAPE_SECTIONS)
        ]
        raise ConfigError(
            f"ckpt_path={ckpt_path} holds networks of other shapes than this config builds: "
            + "; ".join(mismatches)
            + (". Settings that differ: " + "; ".join(shaping) if shaping else "")
            + ". Resume with the checkpoint's values, or start a new run without ckpt_path"
        )
    for key, (old, new) in changes.items():
        log.info(f"resume: {key} changed from {old!r} (checkpoint) to {new!r}")
    reached = checkpoint.get("gan_template", {}).get("iteration")
    if reached is not None and reached >= cfg.train.iterations:
        log.warning(
            f"resume: {ckpt_path} is at iteration {reached}, train.iterations={cfg.train.iterations}: "
            "nothing to train. Raise train.iterations to continue the run"
        )


#: The smallest positive float16 (subnormal): a smaller Adam ``eps`` is 0 in float16.
FLOAT16_TINY = float(torch.finfo(torch.float16).smallest_normal) * 2.0**-10


def warn_about_precision(cfg: DictConfig) -> None:
    """Say before training when ``16-true`` cannot train these optimizers' settings.

    Under ``16-true`` the weights, gradients and Adam's moments are float16 with
    no loss scaling: a squared gradient below float16's smallest value is 0, so
    with an ``eps`` that small too, Adam divides by next to nothing and the
    update overflows (inf/NaN, skipped iterations). Lightning accepts the
    setting; this says what to use instead.
    """
    if str(cfg.trainer.get("precision")) not in ("16-true", "16", "half"):
        return
    too_small = []
    for name in optimizer_names(cfg):
        node = OmegaConf.select(cfg, f"optim.{name}")
        if isinstance(node, DictConfig) and "Adam" in str(node.get("_target_", "")):
            eps = float(node.get("eps", 1e-8))  # torch's default
            if eps < FLOAT16_TINY:
                too_small.append(f"optim.{name}.eps={eps:g}")
    if too_small:
        log.warning(
            "trainer.precision=16-true keeps weights, gradients and Adam's moments in float16 "
            f"without loss scaling: squared gradients below {FLOAT16_TINY:.1e} are 0 there, and "
            f"with {', '.join(too_small)} (below that too) Adam divides by next to nothing: "
            "updates overflow to inf or NaN and the iterations are skipped. Use "
            "trainer.precision=16-mixed (float32 weights; a GradScaler on GPU) or bf16-true, "
            "or set the eps to 1e-4 or more"
        )


def train(cfg: DictConfig, extra_callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Train a GAN as ``cfg`` describes; returns the final logged metrics and the run directory.

    ``extra_callbacks`` join the configured ones (tests and benchmarks observe a run with them).
    """
    validate(cfg)  # every config error at once, before anything is built or loaded
    warn_about_precision(cfg)
    run_dir = Path(cfg.paths.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"Run directory: {run_dir}", flush=True)
    ckpt_path = resolve_checkpoint(cfg.ckpt_path, run_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    avoid_per_step_gpu_probing()

    datamodule: L.LightningDataModule = build(cfg.data, "data")
    num_classes = getattr(datamodule, "num_classes", 0)
    if ckpt_path is not None:
        check_resume(cfg, ckpt_path, num_classes)
    check_memory(cfg, num_classes)
    module = build_module(cfg, num_classes=num_classes)
    check_shapes(module, datamodule)
    decoder = getattr(datamodule, "decoder", None)  # latent data: samples are decoded to images
    if decoder is not None:
        module.decode_samples_with(decoder)
    # One real batch per discriminator update: the module's update schedule decides.
    datamodule.batches_per_iteration = module.batches_per_iteration  # type: ignore[attr-defined]
    check_contracts(
        module.adversarial_loss,
        module.penalty,
        module.skip_rule.predicate,
        datamodule.sample_shape,  # type: ignore[attr-defined]  # checked by check_shapes
        module.regularizers,
    )

    callbacks = [*build_callbacks(cfg), *extra_callbacks]
    # Checkpoints last (a stable sort), as Lightning orders its own Checkpoint callbacks, so
    # that last.ckpt records the evaluations and grids of its iteration; and saved first
    # too where those run, so that a failed or killed evaluation loses no training.
    callbacks.sort(key=lambda callback: isinstance(callback, IterationCheckpoint))
    callbacks[:0] = [
        c.before_periodic_runs() for c in callbacks if isinstance(c, IterationCheckpoint)
    ]
    if not cfg.trainer.get("enable_progress_bar", True):
        # Lightning refuses a progress-bar callback when the bar is disabled.
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    loggers = [
        build(c, f"logger.{name}") for name, c in (cfg.logger or {}).items() if c is not None
    ]
    plugins = [instantiate(plugin) for plugin in cfg.trainer.get("plugins") or []]
    if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
        plugins.append(AtomicCheckpointIO())  # a kill mid-save never leaves a half file
    trainer: L.Trainer = build(
        cfg.trainer,
        "trainer",
        plugins=plugins,
        callbacks=callbacks,
        logger=loggers or False,
        default_root_dir=str(run_dir),
        # The run length is train.iterations, enforced by the module; Lightning's
        # own limits count optimizer steps or epochs and are switched off.
        max_steps=-1,
        max_epochs=-1,
        # The data modules shard per rank themselves (data/sampling.py).
        use_distributed_sampler=False,
    )
    lost = False
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        if module.stop_reason is not None:
            raise stopped_early(trainer, module)
        final_metrics = write_final_metrics(trainer, module, run_dir)
    except Exception as error:
        if is_lost_rank(error):
            lost = True
            raise lost_rank(
                error, trainer.global_rank, module.iteration, saved_checkpoint(trainer)
            ) from error
        if is_disk_full(error):
            raise disk_full(error, module.iteration, saved_checkpoint(trainer)) from error
        raise
    finally:
        if not lost:  # a group with a lost rank is left to the exit: NCCL's destroy may wait on it
            end_process_group()
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return {
        "run_dir": str(run_dir),
        "iteration": module.iteration,
        "metrics": metrics,
        "final_metrics": final_metrics,
        "module": module,
    }


def is_disk_full(error: BaseException) -> TypeGuard[OSError]:
    """A write that failed for want of space (metrics.csv, a sample grid, a log), not a bug."""
    return (
        isinstance(error, OSError)
        and not isinstance(error, WriteError)  # already says what it could not write
        and error.errno in (errno.ENOSPC, errno.EDQUOT)
    )


def disk_full(error: OSError, iteration: int, checkpoint: str | None) -> WriteError:
    what = error.filename or "a file of the run"
    return WriteError(
        f"could not write {what} at iteration {iteration} ({error.strerror}): the disk is full. "
        + (
            f"The checkpoints written so far are intact (last: {checkpoint}); free space and "
            f"resume with ckpt_path={checkpoint}"
            if checkpoint
            else "No checkpoint had been written yet; free space and start again"
        )
    )


def saved_checkpoint(trainer: L.Trainer) -> str | None:
    """The path of this run's ``last.ckpt`` when one has been written."""
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        if isinstance(callback, IterationCheckpoint):
            path = Path(callback.last_path(trainer))
            if path.is_file():
                return str(path)
    return None


def stopped_early(trainer: L.Trainer, module: GANModule) -> StoppedBySignal:
    """The error that ends a run every rank stopped on a signal (``stopping.py``)."""
    saved = [
        f"saved {path}. Resume with the same overrides plus ckpt_path={path}"
        for callback in trainer.callbacks  # type: ignore[attr-defined]
        if isinstance(callback, IterationCheckpoint)
        for path in [callback.last_path(trainer)]
    ]
    return StoppedBySignal(
        f"stopped by {module.stop_reason} after iteration {module.iteration} of "
        f"{module.max_iterations} (every rank stopped there); "
        + (saved[0] if saved else "no checkpoint callback is configured, nothing was saved"),
        rank=trainer.global_rank,
        hand_over=partial(module.stop_signal.hand_over, module.stop_reason or ""),
    )


def write_final_metrics(trainer: L.Trainer, module: GANModule, run_dir: Path) -> dict[str, float]:
    """``<run dir>/final_metrics.json``: the iteration reached and the last evaluation's metrics.

    What a sweep's summary and a sweeper's objective read (``gan_template/harness/sweep.py``).
    """
    final: dict[str, float] = {"iteration": module.iteration}
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        if isinstance(callback, EveryNIterations):
            final |= callback.last_metrics
    if trainer.is_global_zero:
        text = json.dumps(final, indent=1).encode()
        write_atomically(run_dir / FINAL_METRICS, lambda file: file.write(text))
    return final

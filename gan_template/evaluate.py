"""``python -m gan_template.evaluate CKPT``: FID, KID, precision, recall, density, coverage as papers report them.

    python -m gan_template.evaluate <run dir>/checkpoints/last.ckpt            # 50,000 samples
    python -m gan_template.evaluate CKPT --feature-extractor inception --inception-weights FILE

``--n`` samples of the checkpoint's generator (its EMA by default) against the
*whole* training set of its run (``data`` of the stored run config), as
StyleGAN2-ADA's ``fid50k_full`` does; the periodic evaluation during training
uses a smaller N for speed. The samples are generated, embedded and dropped
batch by batch: only their features are kept (FID itself keeps two running
sums), never N images. The reference set's features are computed once and
cached under ``--cache-dir``, keyed by the data (a fingerprint of its images),
its resolution and channels, the extractor and its weights; changed data or
weights make a new entry. The JSON written records the protocol: the
extractor and its weights' hash, N, the seed and the reference set.

Under ``torchrun --nproc_per_node K -m gan_template.evaluate CKPT --samples N`` the
samples are sharded over the K processes: batch ``b`` of the N samples is drawn
from its own seed ``(seed, b)`` and embedded by rank ``b mod K``, rank 0
gathers the features in batch order, so K processes give the single process's
figures (tested) in about 1/K of its time. Rank 0 computes the reference
features (and the offline classifier) first; the other ranks read its cache.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from gan_template.harness.checkpoint_io import write_atomically
from gan_template.harness.errors import UserInputError
from gan_template.metrics.protocol import (
    feature_metrics,
    gathered,
    generated_features,
    reference_features,
)


def join_ranks(device: str) -> tuple[int, int, str]:
    """``(rank, world size, device)``: a process group when started by torchrun (WORLD_SIZE > 1)."""
    import os

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return 0, 1, device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return dist.get_rank(), world_size, device


def check_extractor(args: argparse.Namespace, datamodule: Any) -> None:
    """Refuse an extractor the data cannot have (on every rank, before any waits for another)."""
    if args.feature_extractor == "classifier" and datamodule.num_classes < 2:
        raise UserInputError(
            f"--feature-extractor classifier needs labelled images of at least 2 classes, and "
            f"data.name={datamodule.name} has {datamodule.num_classes}; use --feature-extractor "
            "inception (--inception-weights FILE works offline)"
        )


def feature_extractor(
    args: argparse.Namespace, datamodule: Any, cache_dir: Path
) -> tuple[nn.Module, dict[str, str]]:
    """The extractor and what identifies it (name and weights), as the JSON records it."""
    from gan_template.metrics.extractors import build_extractor

    check_extractor(args, datamodule)
    return build_extractor(
        args.feature_extractor, datamodule, cache_dir, args.inception_weights,
        args.dinov2_weights, args.dinov2_model,
    )  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from gan_template.metrics.extractors import DINOV2_MODEL, EXTRACTORS, default_cache_dir
    from gan_template.sample import positive_int

    parser = argparse.ArgumentParser(
        prog="python -m gan_template.evaluate", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "ckpt", help="a checkpoint of a run on images (<run dir>/checkpoints/*.ckpt)"
    )
    # --samples: under torchrun, whose own parser takes --n for the prefix of its options.
    parser.add_argument(
        "--n", "--samples", dest="n", type=positive_int, default=50_000,
        help="samples (default 50,000)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of the samples' noise")
    parser.add_argument(
        "--reference-samples", type=positive_int, default=None,
        help="real images to compare with, a subset fixed by --seed (default: every one)",
    )  # fmt: skip
    parser.add_argument("--feature-extractor", choices=EXTRACTORS, default="classifier")
    parser.add_argument("--inception-weights", help="local Inception-v3 weights file (no download)")
    parser.add_argument(
        "--dinov2-weights", help="local DINOv2 weights file, for --feature-extractor dinov2"
    )
    parser.add_argument("--dinov2-model", default=DINOV2_MODEL, help="timm's name of the network")
    parser.add_argument("--kid-subset-size", type=positive_int, default=1000)
    parser.add_argument("--no-ema", action="store_true", help="the raw generator, not its EMA")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="reference features and classifiers (default: the template's cache)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="the JSON (default: <run dir>/evaluation_<n>.json)"
    )
    args = parser.parse_args(argv)
    for option in ("inception_weights", "dinov2_weights"):
        path = getattr(args, option)
        if path is not None and not Path(path).is_file():
            parser.error(f"--{option.replace('_', '-')} {path} is not a file")
    args.cache_dir = (args.cache_dir or default_cache_dir()).expanduser()
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Evaluate and write the JSON; returns what it wrote."""
    from gan_template.harness.train import build
    from gan_template.sample import load_generator

    args = parse_args(argv)
    started = time.perf_counter()
    rank, world_size, args.device = join_ranks(args.device)
    try:
        generator, cfg = load_generator(args.ckpt, use_ema=not args.no_ema, device=args.device)
        if getattr(generator, "latent_dim", None) is None:
            raise UserInputError(
                f"{args.ckpt} is an image-to-image run ({cfg.module._target_.rsplit('.', 1)[-1]}):"
                " its scores are on held-out pairs (val/* in its metrics.csv, from "
                "callbacks=translation); this command samples generators of noise"
            )
        if cfg.data.get("resolution") is None:
            raise UserInputError(
                f"{args.ckpt} is a run on toy data: its metrics are toy/* (mode coverage), not images"
            )
        datamodule = build(cfg.data, "data")
        datamodule.setup("fit")
        check_extractor(args, datamodule)
        # Rank 0 first: it trains the offline classifier and embeds the reference set
        # into the cache, which the other ranks then read (one barrier each side).
        if rank != 0:
            dist.barrier()
        extractor, extractor_id = feature_extractor(args, datamodule, args.cache_dir)
        extractor.to(args.device)
        real, reference = reference_features(
            datamodule, extractor, json.dumps(extractor_id, sort_keys=True), args.cache_dir,
            args.device, n=args.reference_samples, seed=args.seed,
        )  # fmt: skip
        if rank == 0 and world_size > 1:
            dist.barrier()
        shard = generated_features(
            generator, {"features": extractor}, args.n, args.seed, args.device, rank, world_size
        )
        fake = gathered(shard, world_size)["features"]
    except UserInputError as error:
        print(f"gan_template.evaluate: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    if rank != 0:
        dist.destroy_process_group()
        return {}
    record = {
        "checkpoint": str(Path(args.ckpt).resolve()),
        "protocol": {
            "n": args.n,
            "seed": args.seed,
            "generator": "raw" if args.no_ema else "ema",
            "extractor": extractor_id,
            "reference": reference,
            "kid_subset_size": min(args.kid_subset_size, len(real), len(fake)),
            "processes": world_size,
        },
        "metrics": feature_metrics(real, fake, args.kid_subset_size),
        "seconds": round(time.perf_counter() - started, 1),
    }
    out = args.out or Path(args.ckpt).resolve().parent.parent / f"evaluation_{args.n}.json"
    write_atomically(out, lambda file: file.write(json.dumps(record, indent=2).encode()))
    print(json.dumps(record["metrics"], indent=2))
    print(f"Wrote {out}")
    if world_size > 1:
        dist.destroy_process_group()
    return record


if __name__ == "__main__":
    main()

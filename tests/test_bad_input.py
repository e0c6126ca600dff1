"""Bad configs and bad data: each stops early with a message naming the problem and the fix.

Mistakes Hydra catches while composing (unknown keys, wrong types) exit with
Hydra's status 1; everything the template checks exits with status 2 and a
one-line-per-problem message, before any data is loaded. Each way out of the
program runs the real command line once; every message is checked in-process
(the same ``train`` the command calls), which costs no Python start-up.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_config
from helpers import run
from PIL import Image

PLUS_KEYS = [
    "+model.nonsense=1",
    "+train.foo=1",
    "+loss.foo=1",
    "+optim.foo=1",
    "+penalty.foo=1",
    "+ema.foo=1",
    "+foo=1",
    "+callbacks.foo=1",
    "+logger.foo=1",
]

CASES = [
    # (overrides, exit code, message fragment or fragments)
    (["trian.iterations=5"], 1, "Key 'trian' not in 'RunConfig'"),
    (["train.iterations=many"], 1, "Value 'many' of type 'str' could not be converted to Integer"),
    (
        ["train.n_critic=0", "optim.gradient_clip_norm=0", "skip.predicate_reason=nonfinite_loss"],
        2,
        [
            "train.n_critic=0: must be >= 1",
            "optim.gradient_clip_norm=0: must be > 0 or null",
            "skip.predicate_reason='nonfinite_loss': must be a name of letters",
        ],
    ),
    (["train.iterations=0"], 2, "train.iterations=0: must be >= 1"),
    (["optim.generator.lr=-0.1"], 2, "optim.generator.lr=-0.1: must be > 0"),
    (
        ["optim.generator.betas=[2,3]"],
        2,
        "optim.generator.betas=[2, 3]: must be two numbers in [0, 1)",
    ),
    (
        ["optim.discriminator.foreach=true"],
        2,
        "optim.discriminator.foreach=True: cannot be true together with optim.discriminator.fused=true",
    ),
    (["ema.decay=1.0"], 2, "ema.decay=1.0: must be in [0, 1)"),
    (["ema.batch_norm_samples=-1"], 2, "ema.batch_norm_samples=-1: must be >= 0 (0: off)"),
    (["loss=wgan"], 1, "Could not find 'loss/wgan'"),  # Hydra lists the options
    (
        ["penalty=r1", "penalty.weight=-1", "penalty.interval=0"],
        2,
        ["penalty.weight=-1", "must be in [0, inf"],
    ),
    (
        [
            "penalty=r1",
            "penalty.weight={_target_: gan_template.schedule.Cosine, start: 1, end: -1, iterations: 10}",
        ],
        2,
        "reaches -1: must be in [0, inf)",
    ),
    (["+penalty.weight=1"], 2, "penalty={'weight': 1}: must be a {_target_: ...} node or null"),
    (
        ["module.trains.generator=[generator,encoder]"],
        2,
        "module: trains.generator=['generator', 'encoder']: no network named ['encoder'] "
        "(networks: ['discriminator', 'generator']); add it under model.<name> or drop it",
    ),
    (
        ["+module.trains.critic=[discriminator]"],
        2,
        "the update 'critic' has no optimizer; set optim.critic",
    ),
    (
        ["+data.batches_per_iteration=2"],
        2,
        "data.batches_per_iteration=2: is set from the module's updates",
    ),
    (["+regularizers.typo=1"], 2, "regularizers.typo=1: must be a {_target_: ...} node or null"),
    (
        ["regularizers=[path_length]", "regularizers.path_length.decay=2"],
        2,
        "regularizers.path_length.decay=2: must be in (0, 1]",
    ),
    (
        ["+regularizers.mine._target_=torch.nn.Identity"],
        2,
        "regularizers.mine._target_='torch.nn.Identity': must build a regulariser of the "
        "discriminator's or the generator's update",
    ),
    (["skip.max_consecutive=-1"], 2, "skip.max_consecutive=-1: must be >= 0"),
    # Sections built from a _target_: its signature is their schema, its constructor their ranges.
    (
        ["skip.max_consecutive=many", "model.generator.width=abc", "+skip.foo=1"],
        2,
        [
            "skip.max_consecutive='many': must be an integer",
            "model.generator.width='abc': must be an integer",
            "skip.foo: not a parameter of gan_template.harness.skip.SkipRule",
        ],
    ),
    (
        ["augment=diffaugment", "augment.cutout_ratio=2", "skip.inject_rank=-2"],
        2,
        ["augment.cutout_ratio=2: must be in (0, 1)", "skip.inject_rank=-2: must be >= 0"],
    ),
    (
        ["optimized_metric=toy/reverse_kl"],  # the default recipe evaluates images
        2,
        "optimized_metric='toy/reverse_kl': must be a final evaluation metric whose evaluation is on",
    ),
    (["data.resolution=24"], 2, "data.resolution=24: the image networks need a power of two"),
    (["data.resolution=2048"], 2, "the networks are too large for this machine: 2,880 M generator"),
    (["data.channels=2"], 2, "data.channels=2: must be 1 (grey) or 3 (RGB)"),
    (
        ["experiment=r3gan", "model.generator.cardinality=3"],  # sizes checked by the network
        2,
        "model.generator.cardinality=3 does not divide the inner width 64",
    ),
    (
        ["+model.generator.widht=8"],
        2,
        "model.generator.widht: not a parameter of gan_template.models.dcgan",
    ),
    (
        ["model.generator._target_=os.system"],
        2,
        "model.generator._target_='os.system': only callables from",
    ),
    (
        ["experiment=ring", "augment=diffaugment"],
        2,
        "augment.policy='color,translation,cutout': augments images; this data has none",
    ),
    (["seed=-1"], 2, "seed=-1: must be in [0, 2**32 - 1]"),
    (
        [
            "+trainer.gradient_clip_val=1.0",
            "+trainer.accumulate_grad_batches=2",
            "+trainer.max_steps=10",
            "data.num_workers=-1",
        ],
        2,
        [
            "data.num_workers=-1: must be >= 0",
            "trainer.gradient_clip_val=1.0: Lightning cannot clip in manual optimization; use optim.gradient_clip_norm",
            "trainer.accumulate_grad_batches=2: gradient accumulation is not offered",
            "trainer.max_steps=10: the run length is train.iterations",
        ],
    ),
    (
        ["experiment=ring", "model=dcgan"],
        2,
        "model.generator.channels: cannot be resolved (Interpolation key 'data.channels' not found)",
    ),
    # Hydra's `+` adds keys the schema does not know; all are reported at once.
    (
        PLUS_KEYS,
        2,
        [
            *(
                f"{key.lstrip('+').split('=')[0]}: not a setting; valid here"
                for key in PLUS_KEYS
                if not key.startswith(("+callbacks", "+logger", "+loss", "+penalty", "+ema"))
            ),
            # Sections built from a _target_: the callable's signature is their schema.
            "loss.foo: not a parameter of gan_template.losses.NonSaturating",
            "penalty={'foo': 1}: must be a {_target_: ...} node or null",
            "ema.foo: not a parameter of gan_template.ema.GeneratorEMA",
            "callbacks.foo=1: each entry is a {_target_: ...} node or null",
            "logger.foo=1: each entry is a {_target_: ...} node or null",
        ],
    ),
    (["ckpt_path=missing.ckpt"], 2, "ckpt_path=missing.ckpt does not exist"),
    (["data.batch_size=5000"], 2, "cannot fill one batch of 5000"),
    (
        ["experiment=ring", "model.generator.data_dim=3"],
        2,
        "generator produces samples of shape (3,)",
    ),
    (
        ["experiment=ring", "model.conditional=true"],
        2,
        "model.conditional=true needs labelled data",
    ),
    (
        ["data=folder", "data.root={tmp}/nowhere"],
        2,
        "/nowhere does not exist; set data.root to a folder",
    ),
    (["data=folder", "data.root={tmp}/empty"], 2, "holds no images in class subfolders"),
    (["data=folder", "data.root={tmp}/corrupt"], 2, "3 of 3 image files cannot be read"),
    (["data=mnist", "data.root={tmp}/empty"], 2, "no usable dataset files under data.root"),
    (["data=folder"], 1, "Missing mandatory value: data.root"),
    # Settings a callback uses only at its first evaluation: refused before any training.
    (
        ["callbacks.image_eval.num_samples=3", "callbacks.sample_grid.rows=0"],
        2,
        [
            "callbacks.image_eval.num_samples=3: must be > 5",
            "callbacks.sample_grid.rows=0, columns=10: both must be >= 1",
        ],
    ),
    (["callbacks.image_eval.num_samples=0"], 2, "callbacks.image_eval.num_samples=0: must be > 5"),
    (["experiment=ring", "callbacks.toy_eval.num_samples=0"], 2, "num_samples=0: must be >= 1"),
    # Constructors outside validate(): the key and the fix, not Hydra's wrapper.
    (["data.limit=0"], 2, "data.limit=0 must be >= 1 (or null: every image)"),
    (["experiment=ring", "data.scale=0"], 2, "data.scale=0 must be > 0"),
    (["trainer.devices=0"], 2, "trainer: `Trainer(devices=0)` value is not a valid input"),
    (
        [
            "optim.generator.lr={_target_: gan_template.schedule.Linear, start: 1e-3, end: 1e-4, iterations: -5}"
        ],
        2,
        "optim.generator.lr.iterations=-5: must be >= 1",
    ),
    # Parts of the user's own that break their contract: found on stand-in tensors before training.
    (
        [
            "loss._target_=user_parts.OnlyDiscriminatorLoss",
            "penalty=r1",
            "penalty._target_=user_parts.ImageGradientPenalty",
            "regularizers=[lecam]",
            "regularizers.lecam._target_=user_parts.FloatPenalty",
            "~regularizers.lecam.decay",
            "skip.predicate={_target_: user_parts.two_flags, _partial_: true}",
            "extra_target_prefixes=[user_parts.]",
        ],
        2,
        [
            "loss (user_parts.OnlyDiscriminatorLoss).generator_loss(...) is not defined",
            "penalty (user_parts.ImageGradientPenalty) differentiates the logits with respect to "
            "the images, but its class does not set `input_gradients = True`",
            "regularizers.lecam (user_parts.FloatPenalty) returned a float, not a tensor",
            "skip.predicate (user_parts.two_flags) returned a tensor of 2 values",
        ],
    ),
    (
        [
            "penalty=r1",
            "penalty._target_=user_parts.FloatPenalty",
            "extra_target_prefixes=[user_parts.]",
        ],
        2,
        "penalty (user_parts.FloatPenalty) returned a float, not a tensor",
    ),
    (
        [
            "experiment=ring",
            "model.generator={_target_: user_parts.GeneratorWithoutLatentDim}",
            "extra_target_prefixes=[user_parts.]",
        ],
        2,
        "GeneratorWithoutLatentDim has no `latent_dim` attribute; every generator must set self.latent_dim",
    ),
    # Values only a run would find: refused at start-up, named, with the fix.
    (
        ["experiment=grid", "data.batch_size=1"],
        2,
        "data.batch_size=1: the networks cannot take a batch of 1 (Expected more than 1 value per channel",
    ),
    (["experiment=ring", "data.batch_size=1"], 2, "not divisible by model.discriminator.pack=2"),
    (
        [
            "+optim.generator_scheduler={_target_: torch.optim.lr_scheduler.ReduceLROnPlateau, _partial_: true}"
        ],
        2,
        "optim.generator_scheduler: ReduceLROnPlateau steps on a monitored metric",
    ),
    (
        ["data=folder", "data.root={tmp}/oneclass", "data.resolution=8", "data.batch_size=8"],
        2,
        "callbacks.image_eval.feature_extractor=classifier needs labelled images of at least 2 classes, and the data has 1",
    ),
    # A schedule nested in a part is named by its own key.
    (
        [
            "penalty=r1",
            "penalty.weight={_target_: gan_template.schedule.Cosine, start: 1, end: 0.1, iterations: 0}",
        ],
        2,
        "penalty.weight.iterations=0: must be >= 1",
    ),
    (
        [
            "penalty=r1",
            "penalty.weight={_target_: gan_template.schedule.Cosine, start: 1, end: 0.1, iterations: 10, warmup: 50}",
        ],
        2,
        "penalty.weight.warmup=50: must be in [0, iterations=10)",
    ),
    (
        [
            "penalty=r1",
            "penalty.interval={_target_: gan_template.schedule.Linear, start: 1, end: 4, iterations: 10}",
        ],
        2,
        "penalty.interval: must be an integer, not a {_target_: ...} node",
    ),
    (
        [
            "data.batch_size={_target_: gan_template.schedule.Linear, start: 8, end: 64, iterations: 10}"
        ],
        2,
        "data.batch_size: must be an integer, not a {_target_: ...} node",
    ),
]


def make_bad_data(tmp: Path) -> None:
    (tmp / "empty").mkdir()
    corrupt = tmp / "corrupt" / "class0"
    corrupt.mkdir(parents=True)
    for i in range(3):
        (corrupt / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    one_class = tmp / "oneclass" / "all"
    one_class.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(16):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
            one_class / f"{i}.png"
        )


def case_id(case: tuple) -> str:
    return " ".join(case[0])


def expected_fragments(message: str | list[str], tmp: Path) -> list[str]:
    return [
        m.replace("{tmp}", str(tmp)) for m in (message if isinstance(message, list) else [message])
    ]


#: The command line's own subject: each path by which a bad input leaves the program, once.
#: Hydra's composition errors (status 1, before any of our code runs); a value refused before
#: Lightning is imported; a harness object's key (refused after it is); data that is missing
#: (found while the data is set up); a checkpoint that does not exist; a callback's setting
#: (refused when the callbacks are built, before training). Every message of CASES
#: is also asserted in-process below.
CLI_CASES = [case for case in CASES if case[1] == 1] + [
    case
    for case in CASES
    if case[0]
    in (
        ["train.iterations=0"],
        ["+model.generator.widht=8"],
        PLUS_KEYS,  # callbacks and logger: harness sections
        ["data=folder", "data.root={tmp}/corrupt"],
        ["ckpt_path=missing.ckpt"],
        ["callbacks.image_eval.num_samples=3", "callbacks.sample_grid.rows=0"],
        ["trainer.devices=0"],
        [
            "penalty=r1",
            "penalty._target_=user_parts.FloatPenalty",
            "extra_target_prefixes=[user_parts.]",
        ],
    )
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Future]]:
    """Every command-line case, started at once on all cores (each is mostly import time)."""

    def run(overrides: list[str]) -> tuple[Path, subprocess.CompletedProcess]:
        tmp = tmp_path_factory.mktemp("case")
        make_bad_data(tmp)
        args = [o.replace("{tmp}", str(tmp)) for o in overrides]
        completed = subprocess.run(
            [sys.executable, "-m", "gan_template", *args, f"hydra.run.dir={tmp / 'run'}"],
            cwd=tmp, capture_output=True, text=True, timeout=300,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},  # user_parts.py
        )  # fmt: skip
        return tmp, completed

    pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2)
    yield {case_id(case): pool.submit(run, case[0]) for case in CLI_CASES}
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize(
    ("overrides", "code", "message"), CLI_CASES, ids=[case_id(c) for c in CLI_CASES]
)
def test_the_command_line_stops_early_with_a_clear_message_and_its_exit_status(
    runs: dict[str, Future], overrides: list[str], code: int, message: str | list[str]
) -> None:
    tmp, completed = runs[case_id((overrides,))].result()
    output = completed.stdout + completed.stderr
    assert completed.returncode == code, output[-3000:]
    for expected in expected_fragments(message, tmp):
        assert expected in output, output[-3000:]
    if code == 2:
        assert "Traceback" not in completed.stderr  # one clean message, no stack trace
    assert not (tmp / "run" / "checkpoints").exists()  # nothing was trained


@pytest.mark.parametrize(
    ("overrides", "code", "message"),
    [case for case in CASES if case[1] == 2],
    ids=[case_id(c) for c in CASES if c[1] == 2],
)
def test_bad_input_is_refused_before_training_with_a_message_naming_key_and_fix(
    tmp_path: Path, overrides: list[str], code: int, message: str | list[str]
) -> None:
    """What ``python -m gan_template`` does with these overrides, in this process: ``train``
    raises the error whose message the command prints (exit status 2, checked above)."""
    from gan_template.__main__ import exit_status
    from gan_template.harness.errors import UserInputError

    make_bad_data(tmp_path)
    cfg = compose_config([o.replace("{tmp}", str(tmp_path)) for o in overrides], tmp_path / "run")
    with pytest.raises(UserInputError) as refused:
        run(cfg)
    assert exit_status(refused.value) == code
    for expected in expected_fragments(message, tmp_path):
        assert expected in str(refused.value)
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing was trained


def test_a_few_unreadable_images_are_skipped_with_a_warning_naming_them(tmp_path: Path) -> None:
    from gan_template.data.images import ImageDataModule

    folder = tmp_path / "images" / "cats"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(30):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "broken.png").write_bytes(b"not a png at all")
    module = ImageDataModule(
        "folder", root=str(tmp_path / "images"), resolution=16, channels=3, batch_size=8
    )
    with pytest.warns(UserWarning, match=r"skipping 1 unreadable image file\(s\).*broken.png"):
        module.setup("fit")
    assert len(module.dataset) == 30 and module.unreadable_files == [str(folder / "broken.png")]
    images, _ = next(iter(module.train_dataloader()))
    assert images.shape == (8, 3, 16, 16)

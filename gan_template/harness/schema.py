"""The config's structure and types, registered in Hydra's ConfigStore as ``schema``.

``conf/config.yaml`` starts from it, so Hydra refuses an unknown key or a value
of the wrong type while composing. Values are checked after composition by
``config.validate``. This module imports nothing but Hydra and OmegaConf: the
entry point registers it at every start, ``--help`` included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

# The schema gives each key its type, and nothing else: defaults and what each key
# means live once, in conf/ (config.yaml and the group files), and ranges in validate().


@dataclass
class TrainConfig:
    iterations: int = MISSING
    n_critic: int = MISSING
    compile: bool = MISSING
    channels_last: bool = MISSING
    diagnostics: str = MISSING  # one of GANModule's (checked against its Literal)


@dataclass
class PathsConfig:
    run_dir: str = MISSING


@dataclass
class RunConfig:
    # Groups whose keys depend on their _target_ (checked against its signature by validate()).
    data: Any = MISSING
    model: Any = MISSING
    optim: Any = MISSING
    trainer: Any = MISSING
    logger: Any = None
    callbacks: Any = None
    # Parts of the module, each a _target_ node (null where the part is optional).
    loss: Any = MISSING  # gan_template.losses.*
    penalty: Any = None  # gan_template.penalties.*, or null (penalty=none)
    regularizers: Any = None  # {name: gan_template.penalties.* node}: more, either update
    skip: Any = MISSING  # gan_template.harness.skip.SkipRule
    augment: Any = None  # gan_template.augment.DiffAugment, or null (augment=none)
    ema: Any = None  # gan_template.ema.GeneratorEMA (a partial), or null (ema=none)
    module: Any = MISSING  # gan_template.module.GANModule: the parts above, wired
    # Sections with a fixed shape.
    train: TrainConfig = field(default_factory=TrainConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    seed: int = MISSING
    ckpt_path: str | None = MISSING
    optimized_metric: str | None = MISSING
    extra_target_prefixes: list[str] = MISSING


def register_schema() -> None:
    ConfigStore.instance().store(name="schema", node=RunConfig)

"""The config schema: what ``conf/`` may say, checked before anything is built.

Two layers, both before any data is loaded:

1. **Structure and types.** :class:`~gan_template.harness.schema.RunConfig` is registered
   in Hydra's ConfigStore as ``schema`` and is the first entry of ``conf/config.yaml``'s
   defaults, so Hydra refuses an unknown key (``trian.iterations=5``) or a
   value of the wrong type (``train.iterations=many``) while composing.
2. **Values and targets.** :func:`validate` checks what neither Hydra nor the
   constructors can: that every ``_target_`` lies in an allowed package (Hydra
   1.4 will require such an allow-list), that every key of a ``_target_`` node
   is a parameter of that callable (``model.generator.widht`` would otherwise
   fail late, deep inside ``instantiate``) and, for ``gan_template``'s own
   callables, of the annotated type; keys added with ``+``; groups that do not
   fit together; and values the networks or the data need (a resolution the
   networks can produce). The parts of the module (``loss``, ``penalty``,
   ``skip``, ``augment``, ``ema``) are built once here, so their constructors'
   range checks are reported with the rest. All problems are reported at
   once, each naming the key, the value and what is allowed.
"""

from __future__ import annotations

import collections.abc
import importlib.util
import inspect
import re
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING as NO_DEFAULT
from dataclasses import fields, is_dataclass
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError
from torch import nn

from gan_template.harness.errors import ConfigError
from gan_template.harness.schema import RunConfig
from gan_template.harness.skip import SkipRule
from gan_template.schedule import Schedule, StepSchedule

#: Packages whose callables a config may instantiate, besides ``extra_target_prefixes``.
ALLOWED_TARGET_PREFIXES = ("gan_template.", "torch.", "torchvision.", "torchmetrics.", "lightning.")


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` naming every invalid value in ``cfg``."""
    problems: list[str] = []

    def need(condition: bool, key: str, allowed: str) -> None:
        if not condition:
            value = OmegaConf.select(cfg, key, default=None)
            problems.append(f"{key}={value!r}: {allowed}")

    try:  # a group that reads a key another group lacks (experiment=ring model=dcgan)
        OmegaConf.to_container(cfg, resolve=True)
    except InterpolationResolutionError as error:
        raise ConfigError(
            f"invalid config:\n  - {error.full_key}: cannot be resolved ({str(error.msg).splitlines()[0]}). The "
            "chosen groups do not fit together: e.g. an image model (model=dcgan) reads "
            "data.resolution, which toy data does not have; pick a model for the data "
            "(toy data: model=mlp; images: model=dcgan or model=resnet; the image-to-image "
            "tasks read paired data: data=paired_digits or data=paired_folder)"
        ) from None
    # Structure and types first: the value checks below rely on them.
    problems += unknown_keys(cfg)
    for section in PART_SECTIONS:
        node = cfg._get_node(section)
        if (
            node is not None
            and not _is_none(node)
            and not (isinstance(node, DictConfig) and "_target_" in node)
        ):
            value = OmegaConf.to_container(node) if isinstance(node, DictConfig) else node
            problems.append(
                f"{section}={value!r}: must be a {{_target_: ...}} node"
                + ("" if section in ("loss", "skip", "module") else " or null")
                + f"; choose an option of conf/{section}/ ({section}=<option>) or give a _target_"
            )
    regularizers: Any = cfg.get("regularizers")
    if regularizers is None:
        regularizers = {}
    elif not isinstance(regularizers, DictConfig):
        problems.append(
            f"regularizers={regularizers!r}: must be a mapping of names to "
            "{_target_: ...} nodes; choose options of conf/regularizers/ (regularizers=[path_length])"
        )
        regularizers = {}
    for name in map(str, regularizers):
        node = regularizers[name]
        if node is not None and not (isinstance(node, DictConfig) and "_target_" in node):
            problems.append(
                f"regularizers.{name}={node!r}: must be a {{_target_: ...}} node or null "
                "(an option of conf/regularizers/, or a regulariser of your own)"
            )
    allowed = (*ALLOWED_TARGET_PREFIXES, *cfg.get("extra_target_prefixes", []))
    targets = _target_nodes(cfg)
    for key, node in targets:
        if _section(key) not in HARNESS_SECTIONS:
            problems += _check_target(key, node, allowed)
    if problems:
        raise invalid_config(problems)

    metric = cfg.optimized_metric
    if metric is not None:
        evaluation = {"toy": "toy_eval", "image": "image_eval"}.get(metric.split("/")[0])
        need(
            evaluation is not None and evaluation in (cfg.callbacks or {}),
            "optimized_metric",
            "must be a final evaluation metric whose evaluation is on: toy/* with "
            "callbacks=toy (toy/reverse_kl, toy/high_quality, toy/modes_captured), image/* "
            "with callbacks=images (image/fid, image/kid, image/class_kl, ...)",
        )
    need(0 <= cfg.seed < 2**32, "seed", "must be in [0, 2**32 - 1]")
    need(
        "batches_per_iteration" not in cfg.data,
        "data.batches_per_iteration",
        "is set from the module's updates (one real batch per discriminator update, "
        "train.n_critic); remove it from the data config",
    )
    need(cfg.train.iterations >= 1, "train.iterations", "must be >= 1")
    need(
        cfg.augment is None or cfg.data.get("resolution") is not None,
        "augment.policy",
        "augments images; this data has none (toy data: augment=none)",
    )
    # Sections built from a _target_ whose constructor checks its own arguments: one
    # place for each range; the constructor's message gets the section's name.
    for section in CONSTRUCTOR_CHECKED:
        if cfg[section] is not None:
            try:
                part = instantiate(cfg[section])
                if section == "ema":  # a partial: built around a stand-in for the generator
                    part(nn.Identity())
            except (InstantiationException, ValueError) as error:  # a partial raises directly
                problems.append(constructor_problem(section, error))
    for name in map(str, regularizers):
        if regularizers[name] is None:
            continue
        key = f"regularizers.{name}"
        try:
            regularizer = instantiate(regularizers[name])
        except (InstantiationException, ValueError) as error:
            problems.append(constructor_problem(key, error))
            continue
        need(
            getattr(regularizer, "update", None) in ("discriminator", "generator"),
            f"{key}._target_",
            "must build a regulariser of the discriminator's or the generator's update: a "
            "subclass of gan_template.penalties.Penalty or GeneratorRegularizer",
        )
    # Single settings whose range their owner's constructor checks.
    for key, owner in SETTINGS_CHECKED_BY_THEIR_OWNER.items():
        try:
            owner(OmegaConf.select(cfg, key))
        except ValueError as error:
            problems.append(
                f"{key}={OmegaConf.select(cfg, key)!r}: {str(error).split(': ', 1)[-1]}"
            )
    for net in optimizer_names(cfg):
        try:
            lr = OmegaConf.select(cfg, f"optim.{net}.lr", default=None)
            need(lr is None or all(v > 0 for v in _values(lr)), f"optim.{net}.lr", "must be > 0")
            betas = OmegaConf.select(cfg, f"optim.{net}.betas", default=None)
            need(
                betas is None
                or (len(betas) == 2 and all(0 <= v < 1 for b in betas for v in _values(b))),
                f"optim.{net}.betas",
                "must be two numbers in [0, 1), e.g. [0.5, 0.999]",
            )
        except InstantiationException as error:  # a schedule that refuses its own arguments
            problems.append(constructor_problem(f"optim.{net}", error))
        except TypeError:
            pass  # a value of the wrong type: the type check of optim.<net> names it
        both = OmegaConf.select(cfg, f"optim.{net}.fused", default=None) and OmegaConf.select(
            cfg, f"optim.{net}.foreach", default=None
        )
        need(
            not both,
            f"optim.{net}.foreach",
            f"cannot be true together with optim.{net}.fused=true; set one of them to false",
        )
    # Trainer settings Lightning refuses in manual optimization, or that the run would ignore.
    for key, instead in TRAINER_SETTINGS_REPLACED.items():
        if cfg.trainer.get(key) is not None:
            problems.append(f"trainer.{key}={cfg.trainer[key]!r}: {instead}")

    def number(key: str) -> Any:
        """``data.<key>`` when it is a number (a wrong type is named by the type check)."""
        value = cfg.data.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    workers = number("num_workers")
    need(
        workers is None or workers >= 0,
        "data.num_workers",
        "must be >= 0 (0: load in the main process)",
    )
    batch_size = number("batch_size")
    need(batch_size is None or batch_size >= 1, "data.batch_size", "must be >= 1")
    latents = cfg.data.get("autoencoder") is not None  # a latent image: any channels
    resolution = number("resolution")
    if resolution is not None:
        power_of_two = resolution >= 8 and resolution & (resolution - 1) == 0
        need(
            power_of_two,
            "data.resolution",
            "the image networks need a power of two >= 8 (16, 32, 64, ...)",
        )
    channels = number("channels")
    need(
        channels is None or channels in (1, 3) or latents,
        "data.channels",
        "must be 1 (grey) or 3 (RGB)",
    )
    clip_norm = cfg.optim.get("gradient_clip_norm")
    if clip_norm is not None:  # its owner's module imports Lightning: only when it is set
        from gan_template.harness.update import Updates

        try:
            Updates(SkipRule(0), clip_norm)
        except ValueError as error:
            problems.append(f"optim.{error}")
    if problems:
        raise invalid_config(problems)

    # Last, the harness's own objects: their modules import Lightning (seconds), which a
    # config refused above never pays for.
    for key, node in targets:
        if _section(key) in HARNESS_SECTIONS:
            problems += _check_target(key, node, allowed)
    if problems:
        raise invalid_config(problems)


def _section(key: str) -> str:
    return key.split(".", 1)[0].split("[", 1)[0]


def _values(node: Any) -> tuple[float, ...]:
    """A number, or the extreme values of the schedule a ``_target_`` node builds."""
    if isinstance(node, DictConfig):
        schedule = instantiate(node)
        return schedule.extremes() if isinstance(schedule, Schedule) else ()
    return (node,)


def constructor_problem(key: str, error: Exception) -> str:
    """``<key>.<name>=<value>: <what is allowed>`` from a constructor's refusal under ``key``.

    Hydra wraps what a constructor raised, and names the node it was building
    only in its message (``full_key: penalty.weight``): a schedule nested in a
    part is so named by its own key, not the part's.
    """
    cause = error.__cause__ if isinstance(error, InstantiationException) else error
    if isinstance(error, InstantiationException):
        nested = re.search(r"full_key: (\S+)", str(error))
        if nested and nested.group(1).startswith(key):
            key = nested.group(1)
    text = str(cause or error)
    if text.startswith(f"{key.split('.')[0]}."):  # names its key already (data.limit=0 ...)
        return text
    return f"{key}.{text}" if re.match(r"\w+=", text) else f"{key}: {text}"


def invalid_config(problems: list[str]) -> ConfigError:
    return ConfigError(
        "invalid config:\n  - "
        + "\n  - ".join(problems)
        + "\n(`python -m gan_template --cfg job` prints the composed config; conf/ documents every key)"
    )


#: Settings passed on to a constructor that checks them (its message names the argument).
SETTINGS_CHECKED_BY_THEIR_OWNER: dict[str, Callable[[Any], object]] = {
    "train.n_critic": lambda value: StepSchedule(n_critic=value),
}

#: Trainer arguments this template replaces, and with what (Lightning raises for the first
#: two in manual optimization; the module sets max_steps/max_epochs itself).
TRAINER_SETTINGS_REPLACED = {
    "gradient_clip_val": "Lightning cannot clip in manual optimization; use "
    "optim.gradient_clip_norm (clips each update's unscaled gradient norm)",
    "gradient_clip_algorithm": "use optim.gradient_clip_norm (norm clipping) instead",
    "accumulate_grad_batches": "gradient accumulation is not offered (a GAN update's "
    "discriminator and generator steps alternate within one batch); raise data.batch_size instead",
    "max_steps": "the run length is train.iterations (generator updates; max_steps would "
    "count every optimizer step); set train.iterations instead",
    "max_epochs": "the run length is train.iterations; set train.iterations instead",
}

#: Sections whose objects are the harness's (Lightning's Trainer, data modules, callbacks,
#: loggers, the LightningModule): their ``_target_`` nodes are checked after everything else.
HARNESS_SECTIONS = ("data", "trainer", "logger", "callbacks", "module")

#: Sections that are one ``_target_`` node each.
PART_SECTIONS = ("loss", "penalty", "skip", "augment", "ema", "module")

#: Sections built from a ``_target_`` whose constructor checks the ranges of its arguments.
CONSTRUCTOR_CHECKED = ("loss", "penalty", "skip", "augment", "ema")

#: Keys of the sections whose shape the schema leaves open (their ``_target_`` nodes are
#: checked against their callables' signatures instead). Besides these, ``model.<name>``
#: may be any network and ``optim.<update>`` any optimizer (``_target_`` nodes), with its
#: ``optim.<update>_scheduler``.
OPEN_SECTIONS = {
    "model": {"conditional", "generator", "discriminator"},
    "optim": {
        "generator",
        "discriminator",
        "generator_scheduler",
        "discriminator_scheduler",
        "gradient_clip_norm",
    },
}


def optimizer_names(cfg: DictConfig) -> list[str]:
    """The updates' names: every ``optim.<name>`` that is a ``_target_`` node."""
    optim = cfg.get("optim")
    if not isinstance(optim, DictConfig):
        return []
    return [
        str(name)
        for name in optim
        if isinstance(optim._get_node(name), DictConfig) and "_target_" in optim[name]
    ]


def _open_key(section: str, node: DictConfig, child: str) -> bool:
    """A network (``model.<name>``) or an optimizer and its scheduler (``optim.<update>``)."""
    value = node._get_node(child)
    if isinstance(value, DictConfig) and "_target_" in value:
        return section in ("model", "optim")
    return section == "optim" and child.endswith("_scheduler")


def unknown_keys(cfg: DictConfig) -> list[str]:
    """Keys the schema does not know, added with Hydra's ``+`` (which composition accepts)."""
    problems = []

    def refuse(key: str, known: set[str]) -> None:
        problems.append(f"{key}: not a setting; valid here: {sorted(known)}")

    sections = {f.name: f for f in fields(RunConfig)}
    for key in cfg:
        name = str(key)
        if name not in sections:
            refuse(name, set(sections))
            continue
        node = cfg._get_node(name)
        factory = sections[name].default_factory
        known: set[str] | None = OPEN_SECTIONS.get(name)
        if factory is not NO_DEFAULT and is_dataclass(factory):
            known = {f.name for f in fields(factory)}
        if known is not None and isinstance(node, DictConfig):
            for child in map(str, node):
                if child not in known and not _open_key(name, node, child):
                    refuse(f"{name}.{child}", known)
        if name in ("callbacks", "logger") and isinstance(node, DictConfig):
            for child in map(str, node):
                entry = node.get(child)
                if entry is not None and not (
                    isinstance(entry, DictConfig) and "_target_" in entry
                ):
                    problems.append(
                        f"{name}.{child}={entry!r}: each entry is a {{_target_: ...}} node or null"
                    )
    return problems


def _is_none(node: Any) -> bool:
    return bool(getattr(node, "_is_none", lambda: False)())


def _target_nodes(node: Any, key: str = "") -> list[tuple[str, DictConfig]]:
    found: list[tuple[str, DictConfig]] = []
    if isinstance(node, DictConfig):
        if "_target_" in node:
            found.append((key, node))
        for child_key in node:
            child = node._get_node(child_key)
            child_name = str(child_key)
            if child is not None and child._is_interpolation():
                continue  # another section, checked where it is defined (module: ${loss})
            found += _target_nodes(child, f"{key}.{child_name}" if key else child_name)
    elif isinstance(node, ListConfig):
        for i, child in enumerate(node):
            found += _target_nodes(child, f"{key}[{i}]")
    return found


def _check_target(key: str, node: DictConfig, allowed: tuple[str, ...]) -> list[str]:
    target = node._target_
    where = f"{key}._target_" if key else "_target_"
    if not str(target).startswith(allowed):
        return [
            f"{where}={target!r}: only callables from {list(allowed)} may be instantiated; add your "
            "package to extra_target_prefixes (e.g. extra_target_prefixes=[my_project.])"
        ]
    try:
        factory = get_method(target)
    except Exception as error:  # Hydra wraps import errors in several types
        return [f"{where}={target!r}: cannot be imported ({error})"]
    module, extra = getattr(factory, "requires", (None, None))
    if module is not None and importlib.util.find_spec(module) is None:
        return [
            f"{where}={target!r} needs the {module} package, which is not installed: "
            f'pip install -e ".[{extra}]"'
        ]
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return []  # builtins without a signature: let instantiate decide
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return []
    unknown = [str(k) for k in node if not str(k).startswith("_") and k not in parameters]
    problems = [
        f"{key}.{name}: not a parameter of {target}; valid: {sorted(p for p in parameters if p != 'self')}"
        for name in unknown
    ]
    if str(target).startswith("gan_template."):  # our annotations are the schema of these nodes
        problems += _type_problems(key, node, factory)
    return problems


def _type_problems(key: str, node: DictConfig, factory: Any) -> list[str]:
    """Values of ``node`` that do not match the annotations of ``factory``'s parameters.

    Plain types only (bool, int, float, str, None, lists and tuples of them,
    Literal, unions); anything else is left to the callable.
    """
    try:
        hints = typing.get_type_hints(factory.__init__ if inspect.isclass(factory) else factory)
    except Exception:  # an annotation that cannot be evaluated here: no check
        return []
    problems = []
    for name in map(str, node):
        child = node._get_node(name)
        if name.startswith("_") or name not in hints:
            continue
        if isinstance(child, DictConfig) and "_target_" in child:
            if _plain(hints[name]):  # a schedule where only a number is taken
                problems.append(
                    f"{key}.{name}: must be {_describe(hints[name])}, not a {{_target_: ...}} "
                    "node (this setting cannot follow a schedule)"
                )
            continue  # an object built by its own _target_, checked on its own
        value = node[name]  # resolved: an interpolation may stand for a list
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_object(value)
        if not _matches(value, hints[name]):
            problems.append(f"{key}.{name}={value!r}: must be {_describe(hints[name])}")
    return problems


def _plain(hint: Any) -> bool:
    """Whether ``hint`` admits only plain values (numbers, strings, lists, None)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return all(_plain(arg) for arg in args)
    return hint in (bool, int, float, str, type(None)) or origin in (list, tuple, typing.Literal)


def _matches(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if origin is typing.Literal:
        return value in args
    if origin in (list, tuple, collections.abc.Sequence, collections.abc.Iterable):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(map(_matches, value, args))
        return not args or all(_matches(item, args[0]) for item in value)
    return True  # a type this check does not model: the callable decides


def _describe(hint: Any, plural: bool = False) -> str:
    if hint is type(None):
        return "null"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg, plural) for arg in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin is tuple and args and args[-1] is not Ellipsis:
        return f"a list of {len(args)} " + " and ".join(
            dict.fromkeys(_describe(arg, plural=True) for arg in args)
        )
    if origin is not None:
        return "a list" + (f" of {_describe(args[0], plural=True)}" if args else "")
    names = {
        bool: ("true or false", "booleans"),
        int: ("an integer", "integers"),
        float: ("a number", "numbers"),
        str: ("a string", "strings"),
    }
    if hint in names:
        return names[hint][plural]
    return getattr(hint, "__name__", str(hint))

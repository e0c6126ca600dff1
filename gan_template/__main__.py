"""``python -m gan_template [overrides...]``: compose ``conf/`` with Hydra and train."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

# Only what every start needs (`--help`, `--cfg job`, a config Hydra refuses): torch and
# Lightning are imported by train(), after Hydra has parsed the command line.
from gan_template.harness.errors import LostRank, TooManySkips, UserInputError, WriteError
from gan_template.harness.schema import register_schema
from gan_template.harness.stopping import STOPPED_EXIT_STATUS, StoppedBySignal
from gan_template.harness.sweep import (
    become_the_parent_job,
    objective,
    ranks_run_this_job,
    write_summary,
)

#: conf/ at the repository root, found from this file so any working directory works.
CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"
register_schema()  # before Hydra composes: conf/config.yaml starts from it

#: Exit statuses besides 0 (done) and 1 (Hydra's composition errors, or a bug).
EXIT_STATUS: dict[type[BaseException], int] = {
    UserInputError: 2,  # a setting, the data, or the checkpoint to resume from is wrong
    TooManySkips: 3,  # training diverged; last.ckpt holds the last good state
    WriteError: 4,  # a checkpoint or another file could not be written; earlier checkpoints are intact
    LostRank: 5,  # another rank died or was unreachable; last.ckpt is intact
    StoppedBySignal: STOPPED_EXIT_STATUS,  # 143: SIGTERM; last.ckpt holds where every rank stopped
}


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Train; returns ``optimized_metric``'s final value when set (what sweepers minimize)."""
    hydra_config = HydraConfig.get()
    try:
        from gan_template.harness.config import validate

        validate(cfg)  # before Lightning is imported: a refused config exits within seconds
        from gan_template.harness.train import train  # imports Lightning

        _route_lightning_logs_through_hydra()
        if hydra_config.mode == RunMode.MULTIRUN:
            with ranks_run_this_job(list(hydra_config.overrides.task), Path(cfg.paths.run_dir)):
                result = train(cfg)
        else:
            result = train(cfg)
        if cfg.optimized_metric is None:
            return None
        return objective(result["final_metrics"], cfg.optimized_metric)
    except (UserInputError, TooManySkips, WriteError, LostRank, StoppedBySignal) as error:
        # The message says what happened and what to do; a traceback would bury it.
        if not isinstance(error, StoppedBySignal):
            print(f"gan_template: error: {error}", file=sys.stderr, flush=True)
        elif error.rank == 0:  # once, not once per rank
            print(f"gan_template: {error}", file=sys.stderr, flush=True)
        if hydra_config.mode == RunMode.MULTIRUN:  # the sweep stops here: summarise it first
            write_summary(Path(hydra_config.sweep.dir))
        if isinstance(error, StoppedBySignal):
            error.hand_over()  # submitit's preemption signal: its handler requeues the job
        raise SystemExit(exit_status(error)) from None


def cli() -> None:
    """The command line: ``python -m gan_template`` and the ``gan-template`` script."""
    # A DDP rank started by a multirun job runs that job, not the sweep again (sweep.py).
    sys.argv[:] = become_the_parent_job(sys.argv)
    main()


def exit_status(error: BaseException) -> int:
    """The documented exit status of ``error`` (its most specific class in ``EXIT_STATUS``)."""
    return next(EXIT_STATUS[kind] for kind in type(error).__mro__ if kind in EXIT_STATUS)


def _route_lightning_logs_through_hydra() -> None:
    # `import lightning` gives its logger a console handler of its own; Hydra
    # has configured the root logger (console + <run dir>/<job>.log), so every
    # Lightning message would be printed twice.
    lightning_logger = logging.getLogger("lightning")
    if logging.getLogger().hasHandlers():
        for handler in list(lightning_logger.handlers):
            lightning_logger.removeHandler(handler)


if __name__ == "__main__":
    cli()

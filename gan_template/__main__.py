"""``python -m gan_template [overrides...]``: compose ``conf/`` with Hydra and train."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from gan_template.config import register_schema
from gan_template.errors import UserInputError

#: conf/ at the repository root, found from this file so any working directory works.
CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"
register_schema()  # before Hydra composes: conf/config.yaml starts from it


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    from gan_template.train import train  # after Hydra parsed the command line: fast --help

    _route_lightning_logs_through_hydra()
    try:
        train(cfg)
    except UserInputError as error:
        # A wrong setting or missing data: the message says which and how to fix it.
        print(f"gan_template: error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def _route_lightning_logs_through_hydra() -> None:
    # `import lightning` gives its logger a console handler of its own; Hydra
    # has configured the root logger (console + <run dir>/<job>.log), so every
    # Lightning message would be printed twice.
    lightning_logger = logging.getLogger("lightning")
    if logging.getLogger().hasHandlers():
        for handler in list(lightning_logger.handlers):
            lightning_logger.removeHandler(handler)


if __name__ == "__main__":
    main()

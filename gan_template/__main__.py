"""``python -m gan_template [overrides...]``: compose ``conf/`` with Hydra and train."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

#: conf/ at the repository root, found from this file so any working directory works.
CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    from gan_template.train import train  # after Hydra parsed the command line: fast --help

    _route_lightning_logs_through_hydra()
    train(cfg)


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

"""The door Hydra needs: it finds sweepers only in the ``hydra_plugins`` namespace.

The search itself is ``gan_template/harness/optuna_search.py``; it is imported when a
sweep starts, not when Hydra scans its plugins at every start (``--help`` too).
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class OptunaSearch(Sweeper):
    """``hydra/sweeper=optuna_search``: see ``gan_template.harness.optuna_search.OptunaSearch``."""

    def __init__(self, **settings: Any) -> None:
        from gan_template.harness.optuna_search import OptunaSearch as Search

        self.search = Search(**settings)

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.search.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        self.search.sweep(arguments)

"""Hyperparameter search with Optuna (>= 4): one study that many worker processes fill at once.

``python -m gan_template -m hparams_search=toy_optuna`` (``conf/hparams_search/``)
runs a Hydra multirun whose sweeper asks Optuna for each trial's values, runs
the trial as a job of the multirun (``<sweep dir>/<trial number>/``) and tells
Optuna its ``optimized_metric``. Why our own sweeper: Hydra's Optuna plugin
(hydra-optuna-sweeper 1.3.0, its last release) pins ``optuna<3``, whose RDB
storage fails on SQLAlchemy 2; this one uses Optuna's ask-and-tell interface.

**Many workers, one study.** With ``storage`` set (``sqlite:///optuna.db``, a
server database such as ``postgresql://...``, or ``journal:///shared/fs/study.log``
for clusters without a database server), start the same command several times
(SLURM array jobs, several nodes) with the same ``hydra.sweep.dir``: each worker
asks for trials until the study holds ``n_trials`` finished or running ones.
For file storages (SQLite, journal) a lock file beside the storage makes that
count and the ask one step, so no trial beyond ``n_trials`` is started; a
server database has no shared file, and there two workers asking at the same
instant can start one trial too many.

**Resume.** A worker notes a heartbeat in its running trial every
``heartbeat_s``; a trial whose heartbeat is older than ``grace_s`` belongs to a
worker that was killed, and the next worker to ask marks it failed. Start the
command again after every worker was killed: the study continues where it was.

**Pruning.** :class:`PruneTrial` (added to the run's callbacks by the
``hparams_search`` config) reports ``optimized_metric`` at every periodic
evaluation and stops a trial the pruner gives up on; it is recorded as pruned.
Pruning needs the trial to run in the worker's process (Hydra's basic launcher);
more workers, not a parallel launcher, give parallelism.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.types import HydraContext, TaskFunction
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

from gan_template.harness.errors import ConfigError
from gan_template.harness.sweep import TRIAL_FILE

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)


@dataclass
class _Running:
    """The trial this process runs now: set by the search around each job, read by PruneTrial."""

    trial: optuna.Trial
    pruned: bool = False


_running: _Running | None = None


class OptunaSearch:
    """The sweeper's logic (``hydra_plugins/gan_template_sweeper`` is the class Hydra finds).

    Args:
        study_name: the study's name in the storage.
        storage: None (in memory, one worker), an SQLAlchemy URL, or ``journal:///<file>``.
        direction: ``minimize`` or ``maximize`` ``optimized_metric``.
        n_trials: finished (completed or pruned) plus running trials the study stops at.
        params: ``{key: Hydra sweep expression}``: ``choice(...)``, ``range(...)``,
            ``interval(a, b)`` (``tag(log, interval(a, b))`` on a log scale).
        sampler: an Optuna sampler (``_target_`` node); default TPE.
        pruner: an Optuna pruner (``_target_`` node); default none.
        heartbeat_s: how often a worker notes that its trial is alive.
        grace_s: a running trial silent this long belongs to a killed worker.
    """

    def __init__(
        self,
        study_name: str,
        storage: str | None = None,
        direction: str = "minimize",
        n_trials: int = 20,
        params: Mapping[str, str] | None = None,
        sampler: Any = None,
        pruner: Any = None,
        heartbeat_s: float = 10.0,
        grace_s: float = 60.0,
    ) -> None:
        if direction not in ("minimize", "maximize"):
            raise ConfigError(f"hydra.sweeper.direction={direction!r}: minimize or maximize")
        if n_trials < 1:
            raise ConfigError(f"hydra.sweeper.n_trials={n_trials}: must be >= 1")
        if not 0 < heartbeat_s < grace_s:
            raise ConfigError(
                f"hydra.sweeper.heartbeat_s={heartbeat_s}, grace_s={grace_s}: need "
                "0 < heartbeat_s < grace_s (a live trial must note itself within the grace)"
            )
        self.study_name, self.storage_url, self.direction = study_name, storage, direction
        self.n_trials, self.heartbeat_s, self.grace_s = n_trials, heartbeat_s, grace_s
        self.space = search_space(dict(params or {}))
        self.sampler, self.pruner = sampler, pruner

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> None:
        """Run trials until the study is full; every worker runs this same loop."""
        global _running
        import optuna

        with self._lock():  # workers started at once would each create the storage's tables
            study = optuna.create_study(
                study_name=self.study_name,
                storage=self._storage(),
                sampler=self.sampler,
                pruner=self.pruner,
                direction="maximize" if self.direction == "maximize" else "minimize",
                load_if_exists=True,
            )
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        while (trial := self._next_trial(study)) is not None:
            overrides = [
                *arguments,
                *(f"{key}={trial_value(trial, key, sweep)}" for key, sweep in self.space.items()),
            ]
            _running = running = _Running(trial)
            state, value = optuna.trial.TrialState.FAIL, None
            try:
                with heartbeat(trial, self.heartbeat_s):
                    (result,) = self.launcher.launch([overrides], initial_job_idx=trial.number)
                if running.pruned:
                    state = optuna.trial.TrialState.PRUNED
                elif result.status == JobStatus.COMPLETED and result.return_value is not None:
                    state, value = optuna.trial.TrialState.COMPLETE, float(result.return_value)
                else:
                    log.warning(f"Trial {trial.number} failed (its job's log says why)")
            finally:  # a refused config (SystemExit) ends the worker: the trial is failed, not left running
                _running = None
                study.tell(trial, value, state=state)
                write_trial_file(
                    sweep_dir / str(trial.number), trial.number, state.name, value, trial.params
                )
        best = best_value(study)
        log.info(f"Study {self.study_name}: best value {best}")
        with open(sweep_dir / "optimization_results.yaml", "w") as file:
            OmegaConf.save(
                {"study_name": self.study_name, "best_value": best,
                 "best_params": study.best_params if best is not None else {}},
                file,
            )  # fmt: skip

    def _storage(self) -> Any:
        import optuna
        from optuna.storages.journal import JournalFileBackend

        url = self.storage_url
        if url is None:
            return None
        if url.startswith("journal://"):
            backend = JournalFileBackend(url.removeprefix("journal://"))
            return optuna.storages.JournalStorage(backend)
        return optuna.storages.RDBStorage(url)

    def _next_trial(self, study: optuna.Study) -> optuna.Trial | None:
        """Fail the trials of killed workers, then a new trial unless the study is full."""
        import optuna

        states = optuna.trial.TrialState
        with self._lock():
            now = time.time()
            for stale in study.get_trials(deepcopy=False, states=(states.RUNNING,)):
                if now - float(stale.user_attrs.get("heartbeat", 0.0)) > self.grace_s:
                    log.warning(
                        f"Trial {stale.number}: no heartbeat for {self.grace_s:g} s, its worker is gone; failed"
                    )
                    study.tell(stale.number, state=states.FAIL)
            counted = (states.COMPLETE, states.PRUNED, states.RUNNING, states.WAITING)
            if len(study.get_trials(deepcopy=False, states=counted)) >= self.n_trials:
                return None
            trial = study.ask()
            trial.set_user_attr("heartbeat", time.time())
            return trial

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """An exclusive lock beside a file storage; nothing for a server database."""
        url = self.storage_url or ""
        path = url.removeprefix("journal://").removeprefix("sqlite:///")
        if path == url:  # in memory, or a server database
            yield
            return
        with open(f"{path}.search.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def search_space(params: Mapping[str, str]) -> dict[str, Any]:
    """``{key: Hydra sweep}`` from the YAML's expressions, refusing what Optuna cannot sample."""
    parser = OverridesParser.create()
    space = {}
    for key, expression in params.items():
        (override,) = parser.parse_overrides([f"{key}={expression}"])
        sweep = override.value()
        if not isinstance(sweep, (ChoiceSweep, RangeSweep, IntervalSweep)):
            raise ConfigError(
                f"hydra.sweeper.params.{key}={expression!r}: must be choice(...), range(...), "
                "interval(a, b) or tag(log, interval(a, b))"
            )
        space[key] = sweep
    return space


def trial_value(trial: optuna.Trial, key: str, sweep: Any) -> Any:
    """The trial's value for ``key``, suggested from its sweep expression."""
    choices: list[Any] | None = None
    if isinstance(sweep, ChoiceSweep):
        choices = list(sweep.list)
    elif isinstance(sweep, RangeSweep):
        start, stop, step = (float(v or 0) for v in (sweep.start, sweep.stop, sweep.step))
        choices = list(range(int(start), int(stop), int(step or 1)))
    if choices is not None:
        return trial.suggest_categorical(key, choices)
    log_scale = "log" in sweep.tags
    if isinstance(sweep.start, int) and isinstance(sweep.end, int):
        return trial.suggest_int(key, sweep.start, sweep.end, log=log_scale)
    return trial.suggest_float(key, float(sweep.start), float(sweep.end), log=log_scale)


def best_value(study: optuna.Study) -> float | None:
    try:
        return float(study.best_value)
    except ValueError:  # no trial completed
        return None


def write_trial_file(
    job_dir: Path, number: int, state: str, value: float | None, params: Mapping[str, Any]
) -> None:
    job_dir.mkdir(parents=True, exist_ok=True)
    record = {"number": number, "state": state, "value": value, "params": dict(params)}
    (job_dir / TRIAL_FILE).write_text(json.dumps(record, indent=2))


@contextlib.contextmanager
def heartbeat(trial: optuna.Trial, every_s: float) -> Iterator[None]:
    """Note ``time.time()`` in the trial every ``every_s`` while the block runs."""
    done = threading.Event()

    def beat() -> None:
        while not done.wait(every_s):
            trial.set_user_attr("heartbeat", time.time())

    thread = threading.Thread(target=beat, name="optuna-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


class PruneTrial(Callback):
    """Reports ``optimized_metric`` at each periodic evaluation; stops a trial the pruner drops.

    Does nothing outside an Optuna search. Place it after the evaluations
    (``conf/hparams_search/*.yaml`` appends it to ``callbacks``).
    """

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self._reported = -1

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
    ) -> None:
        import optuna

        from gan_template.callbacks.periodic import EveryNIterations

        running = _running
        iteration = int(getattr(pl_module, "iteration", -1))
        if running is None or iteration == self._reported:
            return
        for callback in trainer.callbacks:  # type: ignore[attr-defined]
            if (
                isinstance(callback, EveryNIterations)
                and callback.last_run_iteration == iteration
                and self.metric in callback.last_metrics
            ):
                self._reported = iteration
                running.trial.report(float(callback.last_metrics[self.metric]), step=iteration)
                if running.trial.should_prune():
                    running.pruned = True
                    raise optuna.TrialPruned(f"pruned at iteration {iteration}")

"""The machinery that makes any algorithm safe to train: you should not need to open it.

The LightningModule under every algorithm (``guarded_module``: networks and
updates by name, the begin / update / end calls of a ``training_step``, the
run's bookkeeping), building and fitting a run (``train``), the config's schema and checks
(``config``, ``schema``, ``contracts``), the guarded optimizer update
(``update``) and the skip rule's agreement across ranks (``skip``,
``distributed``, ``strategy``), stop signals (``stopping``), checkpoints
every N iterations, written atomically and resumed exactly
(``iteration_checkpoint``, ``checkpoint_io``, ``resume``, ``run_lock``), the
progress bar (``progress``), trackers (``loggers``), sweeps (``sweep``, ``optuna_search``),
host-sync counting (``host_syncs``) and the few Lightning internals it relies
on (``lightning_internals``, the one module that touches them). What is yours
to change lives one level up: the algorithm (``module.py``), its losses,
regularisers, augmentation, EMA and schedules, ``models/``, ``data/``,
``metrics/`` and ``callbacks/``.
"""

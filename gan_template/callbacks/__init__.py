"""Lightning callbacks of the run's evaluations: sample grids, FID/KID and friends, mode
coverage, the curves picture, and their base (``periodic.EveryNIterations``). The progress
bar and the iteration checkpoints are the harness's (``harness/progress.py``,
``harness/iteration_checkpoint.py``)."""

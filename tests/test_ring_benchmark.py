"""The ring recipe, exactly as shipped, meets the mode-coverage bar on this machine."""

from __future__ import annotations

import time

from helpers import run


def test_ring_recipe_captures_all_modes_with_high_quality(make_config) -> None:
    cfg = make_config("experiment=ring", "trainer.log_every_n_steps=500")
    start = time.perf_counter()
    result = run(cfg)
    seconds = time.perf_counter() - start
    coverage = next(
        c for c in result["module"].trainer.callbacks if type(c).__name__ == "ToyMixtureEvaluation"
    ).result
    assert coverage.modes_captured == 8, coverage
    assert coverage.high_quality >= 0.90, coverage
    assert seconds < 240, f"the ring recipe took {seconds:.0f}s; it should take about a minute"

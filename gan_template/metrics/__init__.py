"""Quality metrics. Plain torch: no Lightning, no Hydra."""

"""Lightning callbacks: progress in iterations, checkpoints in iterations, evaluation."""

"""Running a benchmark's child process: its output, or its error and a clean exit."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path


def run_child(command: list[str], env: Mapping[str, str] | None = None) -> str:
    """Run ``command``; return its stdout, or exit showing the command and its stderr's end.

    (``subprocess.run(..., check=True, capture_output=True)`` would raise with
    the output captured and never shown, hiding why a run failed.)
    """
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(
            f"a benchmark run failed (exit {done.returncode}):\n  {shlex.join(command)}\n"
            f"{done.stderr[-3000:]}"
        )
    return done.stdout


#: What :func:`training_run` adds to a run's overrides (besides its run directory).
RUN_OVERRIDES = ["trainer.enable_progress_bar=false"]


def training_run(overrides: list[str], run_dir: Path, section: str) -> dict:
    """``python -m gan_template <overrides>`` in ``run_dir``; its final metrics and run time.

    The metrics are those of ``final_metrics.json`` under ``section`` (``toy`` or
    ``image``), without the prefix, and the ``iteration`` reached.

    The command is the one a user would type, so studies measure what users get.
    """
    command = [
        sys.executable, "-m", "gan_template", *overrides, *RUN_OVERRIDES,
        f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    start = time.perf_counter()
    run_child(command)
    final = json.loads((run_dir / "final_metrics.json").read_text())
    result = {
        k.removeprefix(f"{section}/"): v for k, v in final.items() if k.startswith(f"{section}/")
    }
    result["iteration"] = final["iteration"]
    result["seconds"] = time.perf_counter() - start
    return result

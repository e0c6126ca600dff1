"""Running a benchmark's child process: its output, or its error and a clean exit."""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Mapping


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

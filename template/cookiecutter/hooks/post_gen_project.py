"""Make the project: the template's checkout, renamed by template/new_project.py, into this folder.

cookiecutter has rendered only a placeholder folder; the project itself is the
repository root (a runnable project, not a Jinja tree), copied and renamed by
the same script that `git clone` and copier users run, so every way gives the
same files.
"""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(r"{{ cookiecutter._repo_dir }}").resolve().parents[1]
destination = Path.cwd()
for entry in destination.iterdir():  # the placeholder
    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
completed = subprocess.run(
    [
        sys.executable,
        str(ROOT / "template" / "new_project.py"),
        str(destination),
        "--name",
        "{{ cookiecutter.project_name }}",
        "--package",
        "{{ cookiecutter.package_name }}",
    ],
    check=False,
)
sys.exit(completed.returncode)

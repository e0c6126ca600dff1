"""Refuse unusable names before cookiecutter writes anything (the checks of template/new_project.py)."""

import sys
from pathlib import Path

# Rendered by cookiecutter: the folder holding cookiecutter.json, inside the template's checkout.
ROOT = Path(r"{{ cookiecutter._repo_dir }}").resolve().parents[1]
sys.path.insert(0, str(ROOT / "template"))

from new_project import ProjectNameError, check_names  # noqa: E402

try:
    check_names("{{ cookiecutter.project_name }}", "{{ cookiecutter.package_name }}")
except ProjectNameError as error:
    print(f"cookiecutter: {error}", file=sys.stderr)
    sys.exit(1)

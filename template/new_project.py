"""Make your own project from this template: the package renamed everywhere, template-only files dropped.

    python template/new_project.py ../my-gan                  # a renamed copy (package my_gan)
    python template/new_project.py ../x --name my-gan --package mygan
    python template/new_project.py --in-place --name my-gan   # rename the checkout this script is in

The copy gets: the package folder renamed, every import, ``_target_`` path,
command line, cache folder and environment variable that names it rewritten
(``gan_template`` -> ``my_gan``, ``gan-template`` -> ``my-gan``,
``GAN_TEMPLATE`` -> ``MY_GAN``), the README titled with the project name, and
without the files that only serve the template itself (this script,
``copier.yml``, the instantiation test and its workflow, the README section on
starting a project). Standard library only: it runs before anything is installed.

copier runs this same script as its post-copy task (``copier.yml``), so both
ways give the same project.
"""

from __future__ import annotations

import argparse
import keyword
import re
import shutil
import subprocess
import sys
from pathlib import Path

TEMPLATE_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PACKAGE = "gan_template"
TEMPLATE_DISTRIBUTION = "gan-template"

#: Paths (relative to the project root) that exist only to serve the template.
TEMPLATE_ONLY = (
    "copier.yml",
    "template",
    "tests/test_template.py",
    ".github/workflows/template.yml",
)
#: A line containing this marker serves the template only and is removed (e.g. a dependency).
TEMPLATE_ONLY_LINE = "# template-only"
#: The README section between these markers is about the template, not the project.
README_TEMPLATE_SECTION = re.compile(
    r"\n?<!-- template-only:start -->.*?<!-- template-only:end -->\n?", re.DOTALL
)

#: Never copied: local state, not the project.
IGNORED_NAMES = {
    ".git", ".venv", "venv", "outputs", "multirun", "lightning_logs", "__pycache__",
    ".pytest_cache", ".ruff_cache", ".mypy_cache", "build", "dist",
}  # fmt: skip
IGNORED_SUFFIXES = (".egg-info", ".ckpt", ".pyc")

#: Import names a new package must not take: it would shadow them.
TAKEN_NAMES = {
    "torch", "torchvision", "torchmetrics", "lightning", "hydra", "omegaconf", "numpy",
    "sklearn", "matplotlib", "PIL", "tests", "conf", "benchmarks", "docs", TEMPLATE_PACKAGE,
}  # fmt: skip


class ProjectNameError(ValueError):
    """A project or package name that cannot be used; the message says why and what to do."""


def package_from_name(name: str) -> str:
    """``My-GAN project`` -> ``my_gan_project``."""
    return re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()


def check_names(name: str, package: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?", name):
        raise ProjectNameError(
            f"--name {name!r} is not a valid distribution name: use letters, digits, '-', '_' "
            "and '.', starting and ending with a letter or digit (for example my-gan)"
        )
    if not package.isidentifier() or keyword.iskeyword(package):
        raise ProjectNameError(
            f"--package {package!r} is not a Python identifier: use lowercase letters, digits "
            "and '_', not starting with a digit (for example my_gan)"
        )
    stdlib = getattr(sys, "stdlib_module_names", frozenset())
    if package in TAKEN_NAMES or package in stdlib:
        raise ProjectNameError(
            f"--package {package!r} would shadow the module of that name (a dependency, the "
            "standard library or a folder of this project); choose another one"
        )


def copy_tree(source: Path, destination: Path) -> None:
    """Copy the project, leaving out virtual environments, runs, caches and Git history."""
    if destination.exists() and any(destination.iterdir()):
        raise ProjectNameError(
            f"{destination} already exists and is not empty; choose a new folder "
            "(or use --in-place inside a fresh clone)"
        )

    def ignore(folder: str, names: list[str]) -> set[str]:
        return {n for n in names if n in IGNORED_NAMES or n.endswith(IGNORED_SUFFIXES)}

    shutil.copytree(source, destination, ignore=ignore, dirs_exist_ok=True)


def rewrite_text(text: str, name: str, package: str) -> str:
    text = text.replace(TEMPLATE_PACKAGE, package)
    text = text.replace(TEMPLATE_DISTRIBUTION, name)
    return text.replace(TEMPLATE_PACKAGE.upper(), package.upper())


def rename_project(root: Path, name: str, package: str) -> list[Path]:
    """Turn the template at ``root`` into project ``name`` with package ``package``, in place.

    Returns the files whose text changed.
    """
    check_names(name, package)
    if not (root / TEMPLATE_PACKAGE).is_dir():
        raise ProjectNameError(
            f"{root} has no {TEMPLATE_PACKAGE}/ folder: it is not this template, or it was renamed already"
        )
    for relative in TEMPLATE_ONLY:
        path = root / relative
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()

    changed = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or any(part in IGNORED_NAMES for part in path.parts):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # images and other binary files
        new = rewrite_text(text, name, package)
        if TEMPLATE_ONLY_LINE in new:
            new = "".join(
                line for line in new.splitlines(keepends=True) if TEMPLATE_ONLY_LINE not in line
            )
        if path == root / "README.md":
            new = README_TEMPLATE_SECTION.sub("\n", new)
            new = re.sub(r"\A# .*", f"# {name}", new, count=1)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    (root / TEMPLATE_PACKAGE).rename(root / package)
    # The sweeper's entry for Hydra is named after the package too (two projects, two plugins).
    plugin = root / "hydra_plugins" / f"{TEMPLATE_PACKAGE}_sweeper"
    if plugin.is_dir():
        plugin.rename(plugin.with_name(f"{package}_sweeper"))
    for stale in root.glob(f"{TEMPLATE_PACKAGE}*.egg-info"):
        shutil.rmtree(stale)  # the template's install metadata; `pip install -e .` remakes it
    return changed


def reformat(root: Path) -> bool:
    """Re-wrap the lines whose length the new name changed, with ruff where it is installed.

    Returns False when no ruff could be run (then ``ruff format .`` is left to the user).
    """
    for ruff in (["ruff"], [sys.executable, "-m", "ruff"]):
        try:
            subprocess.run(
                [*ruff, "format", "--quiet", "--no-cache", "."],
                cwd=root,
                check=True,
                capture_output=True,
            )
            return True
        except (OSError, subprocess.CalledProcessError):
            continue
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("destination", nargs="?", type=Path, help="folder for the new project")
    parser.add_argument("--name", help="distribution name (default: the destination's name)")
    parser.add_argument("--package", help="import name (default: derived from --name)")
    parser.add_argument(
        "--in-place", action="store_true", help="rename this checkout instead of copying it"
    )
    args = parser.parse_args(argv)
    if args.in_place == (args.destination is not None):
        parser.error("give a destination folder, or --in-place (not both)")
    if args.in_place and not args.name:
        parser.error("--in-place needs --name")
    root = TEMPLATE_ROOT if args.in_place else args.destination.resolve()
    name = args.name or root.name
    package = args.package or package_from_name(name)
    try:
        check_names(name, package)
        if not args.in_place:
            copy_tree(TEMPLATE_ROOT, root)
        rename_project(root, name, package)
    except ProjectNameError as error:
        print(f"new_project: error: {error}", file=sys.stderr)
        return 2
    formatted = reformat(root)
    commit = "git add -A && git commit -m 'Rename the package'"
    if not args.in_place:
        commit = "git init && " + commit.replace("Rename the package", "Start the project")
    print(
        f"Created {name} (package {package}) in {root}. Next:\n"
        f"  cd {root}\n  {commit}\n"
        '  python3 -m venv .venv && source .venv/bin/activate && pip install -e ".[dev]"\n'
        + ("" if formatted else "  ruff format .   # the new name changed some line lengths\n")
        + f"  python -m pytest && python -m {package}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

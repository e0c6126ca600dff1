"""Starting a project from the template: the renamed copy is complete, consistent and runs.

Template-only: ``template/new_project.py`` drops this file from the projects it makes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "template" / "new_project.py"
OLD_NAMES = ("gan_template", "gan-template", "GAN_TEMPLATE")


def new_project(destination: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(destination), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def text_files(root: Path) -> dict[str, str]:
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            try:
                files[path.relative_to(root).as_posix()] = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                files[path.relative_to(root).as_posix()] = "<binary>"
    return files


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("projects") / "my-gan"
    result = new_project(root)
    assert result.returncode == 0, result.stderr
    return root


def test_the_package_is_renamed_everywhere(project: Path) -> None:
    assert (project / "my_gan" / "module.py").is_file()
    assert not (project / "gan_template").exists()
    assert (project / "hydra_plugins" / "my_gan_sweeper" / "__init__.py").is_file()
    assert not any("gan_template" in str(path) for path in project.rglob("*"))
    files = text_files(project)
    leftovers = {name: old for name, text in files.items() for old in OLD_NAMES if old in text}
    assert leftovers == {}
    pyproject = files["pyproject.toml"]
    assert 'name = "my-gan"' in pyproject
    assert 'my-gan = "my_gan.__main__:cli"' in pyproject
    assert "copier" not in pyproject  # a dependency of the template's own test only
    assert files["README.md"].startswith("# my-gan\n")
    assert "_target_: my_gan.models.dcgan.DCGANGenerator" in files["conf/model/dcgan.yaml"]
    assert "MY_GAN_CACHE" in files["my_gan/callbacks/image_eval.py"]


def test_template_only_files_are_dropped(project: Path) -> None:
    for relative in ("copier.yml", "template", "tests/test_template.py", ".github/workflows/template.yml"):  # fmt: skip
        assert not (project / relative).exists(), relative
    readme = (project / "README.md").read_text()
    assert "template-only" not in readme and "new_project.py" not in readme
    # The project's own CI stays, and its lint passes although the new name changed line lengths.
    assert (project / ".ci" / "run").is_file() and (project / ".github/workflows/ci.yml").is_file()
    for command in (["check"], ["format", "--check"]):
        lint = subprocess.run(
            [sys.executable, "-m", "ruff", *command, "."],
            cwd=project,
            capture_output=True,
            text=True,
        )
        assert lint.returncode == 0, lint.stdout[-2000:]


def test_the_new_project_passes_its_fast_tests(project: Path) -> None:
    # The new package is imported from the project folder (no install needed for this check;
    # the CI job `template.yml` installs it and runs its whole suite). Its configs are checked by
    # the next test's training run.
    env = {**os.environ, "PYTHONPATH": str(project)}
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
         "tests/test_losses.py"],
        cwd=project, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-3000:]
    assert " passed" in tests.stdout and "failed" not in tests.stdout


def test_the_new_project_trains_on_an_image_folder(project: Path, tmp_path: Path) -> None:
    # The README's "Train on your own images" in the renamed project: two classes of PNGs.
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for index, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        if label < 2:
            folder = tmp_path / "images" / f"digit{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray((image * 15).astype("uint8")).resize((16, 16)).save(
                folder / f"{index}.png"
            )
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(project), "MY_GAN_CACHE": str(tmp_path / "cache")}
    run = subprocess.run(
        [sys.executable, "-m", "my_gan", "data=folder", f"data.root={tmp_path / 'images'}",
         "data.resolution=16", "data.channels=1", "data.num_workers=0", "data.batch_size=32",
         "train.iterations=20", "trainer=cpu", "trainer.enable_progress_bar=false",
         f"hydra.run.dir={run_dir}"],
        cwd=project, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "samples" / "grid_last.png").is_file()
    assert "my_gan" in (run_dir / ".hydra" / "config.yaml").read_text()
    metrics = json.loads((run_dir / "final_metrics.json").read_text())
    assert metrics["iteration"] == 20 and metrics["image/num_classes"] == 2


def test_copier_makes_the_same_project(tmp_path: Path) -> None:
    copier = pytest.importorskip("copier")
    expected = tmp_path / "by_script" / "my-gan"  # fresh: `project` has run outputs by now
    assert new_project(expected).returncode == 0
    destination = tmp_path / "by_copier" / "my-gan"
    copier.run_copy(
        str(REPO_ROOT),
        str(destination),
        data={"project_name": "my-gan"},
        vcs_ref="HEAD",  # this checkout (with uncommitted changes), not the latest tag
        defaults=True,
        unsafe=True,  # the post-copy task runs template/new_project.py
        quiet=True,
    )
    assert text_files(destination) == text_files(expected)


def test_cookiecutter_makes_the_same_project(tmp_path: Path) -> None:
    cookiecutter = pytest.importorskip("cookiecutter.main")
    expected = tmp_path / "by_script" / "my-gan"
    assert new_project(expected).returncode == 0
    made = cookiecutter.cookiecutter(
        str(REPO_ROOT),
        directory="template/cookiecutter",  # the root stays the runnable project
        no_input=True,
        extra_context={"project_name": "my-gan"},
        output_dir=str(tmp_path / "by_cookiecutter"),
    )
    assert Path(made) == tmp_path / "by_cookiecutter" / "my-gan"
    assert text_files(Path(made)) == text_files(expected)


def test_cookiecutter_refuses_an_unusable_package_name(tmp_path: Path) -> None:
    cookiecutter = pytest.importorskip("cookiecutter.main")
    from cookiecutter.exceptions import FailedHookException

    with pytest.raises(FailedHookException):
        cookiecutter.cookiecutter(
            str(REPO_ROOT),
            directory="template/cookiecutter",
            no_input=True,
            extra_context={"project_name": "my-gan", "package_name": "torch"},
            output_dir=str(tmp_path),
        )
    assert not (tmp_path / "my-gan").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--package", "my-gan"], "not a Python identifier"),
        (["--package", "class"], "not a Python identifier"),
        (["--package", "torch"], "would shadow"),
        (["--package", "json"], "would shadow"),
        (["--name", "my gan!"], "not a valid distribution name"),
    ],
)
def test_unusable_names_are_refused_before_anything_is_written(
    tmp_path: Path, args: list[str], message: str
) -> None:
    destination = tmp_path / "new"
    result = new_project(destination, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert not destination.exists()


def test_an_existing_folder_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    result = new_project(tmp_path, "--name", "my-gan")
    assert result.returncode == 2 and "not empty" in result.stderr
    assert (tmp_path / "mine.txt").read_text() == "keep me"

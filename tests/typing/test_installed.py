"""Typed as installed: the built wheel, in a fresh venv, under a user's ``mypy --strict``.

The checks of this folder run again from a directory outside the repository, with mypy
resolving ``scalekit`` through a fresh virtual environment that holds nothing but the
wheel (``--python-executable``): a missing ``py.typed`` marker (mypy then reports
``import-untyped`` and every decorated function turns into ``Any``) or a decorator that
erases its signature fails here even though the checkout type-checks.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
from test_typing import CHECKS, HERE, expected_errors, mypy_errors

ROOT = HERE.parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a fresh venv with only the built wheel of this checkout installed."""
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(work), str(ROOT)],
        check=True,
    )
    (wheel,) = work.glob("scalekit_primitives-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "scalekit/py.typed" in names, "the wheel lacks the py.typed marker"
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
    env = work / "venv"
    venv.EnvBuilder(with_pip=False).create(env)
    python = env / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--no-deps", str(wheel)],
        check=True,
    )  # fmt: skip
    return python


@pytest.mark.slow
@pytest.mark.parametrize("name", CHECKS)
def test_installed_wheel_types(installed: Path, name: str, tmp_path: Path) -> None:
    target = tmp_path / name
    shutil.copy(HERE / name, target)
    got, output = mypy_errors(target, cwd=tmp_path, extra=("--python-executable", str(installed)))
    assert got == expected_errors(target), output


@pytest.mark.slow
def test_installed_wheel_is_the_one_checked(installed: Path, tmp_path: Path) -> None:
    """The venv imports scalekit from the wheel, not from this checkout."""
    out = subprocess.run(
        [str(installed), "-c", "import scalekit, sys; print(scalekit.__file__)"],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    )  # fmt: skip
    venv_root = installed.parent.parent
    location = Path(out.stdout.strip()).resolve()
    assert location.is_relative_to(venv_root.resolve()) and "site-packages" in location.parts
    assert not location.is_relative_to(ROOT)

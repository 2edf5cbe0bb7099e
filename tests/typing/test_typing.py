"""The public signatures under ``mypy --strict``: decorators keep the wrapped types.

Each ``check_*.py`` file here uses the API as users would and marks the lines where
mypy must report an error with ``# E: <code>``; the test runs mypy on it and wants
exactly those errors, no more and no fewer.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CHECKS = sorted(p.name for p in HERE.glob("check_*.py"))


def test_every_check_file_is_collected() -> None:
    assert {"check_public_api.py", "check_resilience.py", "check_sampling.py"} <= set(CHECKS)


def mypy_errors(
    target: Path, *, cwd: Path, extra: tuple[str, ...] = ()
) -> tuple[set[tuple[int, str]], str]:
    """(line, error code) of every mypy error in ``target``, and mypy's output."""
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--show-error-codes",
         "--hide-error-context", "--no-error-summary", *extra, str(target)],
        capture_output=True, text=True, check=False, cwd=cwd,
    )  # fmt: skip
    got: set[tuple[int, str]] = set()
    for line in out.stdout.splitlines():
        if ": note: " in line:
            continue
        m = re.match(rf".*{re.escape(target.name)}:(\d+): error: .*\[([\w-]+)\]$", line)
        assert m, f"unexpected mypy output: {line}"
        got.add((int(m[1]), m[2]))
    return got, out.stdout


def expected_errors(target: Path) -> set[tuple[int, str]]:
    """The ``# E: <code>`` marks of a check file."""
    return {
        (n, m[1])
        for n, text in enumerate(target.read_text().splitlines(), 1)
        if (m := re.search(r"# E: ([\w-]+)$", text))
    }


@pytest.mark.parametrize("name", CHECKS)
def test_public_api_types(name: str) -> None:
    target = HERE / name
    got, output = mypy_errors(target, cwd=HERE.parents[1])
    expected = expected_errors(target)
    assert expected, f"{name} lost its expected errors"
    assert got == expected, output

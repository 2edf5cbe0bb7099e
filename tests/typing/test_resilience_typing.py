"""scalekit.resilience under ``mypy --strict``: decorators keep the wrapped types."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_resilience_types() -> None:
    target = HERE / "check_resilience.py"
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--show-error-codes",
         "--hide-error-context", "--no-error-summary", str(target)],
        capture_output=True, text=True, check=False, cwd=HERE.parents[1],
    )  # fmt: skip
    got: set[tuple[int, str]] = set()
    for line in out.stdout.splitlines():
        if ": note: " in line:
            continue
        m = re.match(r".*check_resilience\.py:(\d+): error: .*\[([\w-]+)\]$", line)
        assert m, f"unexpected mypy output: {line}"
        got.add((int(m[1]), m[2]))
    expected = {
        (n, m[1])
        for n, text in enumerate(target.read_text().splitlines(), 1)
        if (m := re.search(r"# E: ([\w-]+)$", text))
    }
    assert expected, "the check file lost its expected errors"
    assert got == expected, out.stdout

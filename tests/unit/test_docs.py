"""The documentation's code examples run against the code (docs/_check_snippets.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.redis
def test_every_docs_example_runs(fresh_redis_url: str) -> None:
    env = {**os.environ, "SCALEKIT_DOCS_REDIS_URL": fresh_redis_url}
    out = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "_check_snippets.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    total = out.stdout.strip().splitlines()[-1]
    assert total.endswith(" 0 failed"), total
    assert " 0 ran" not in total


def test_readme_tour_runs() -> None:
    import re

    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "the README lost its tour"
    ns: dict[str, object] = {}
    exec(blocks[0], ns)  # the tour uses memory:// only
    assert ns["decision"].allowed  # type: ignore[attr-defined]

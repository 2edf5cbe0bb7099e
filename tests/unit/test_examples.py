from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_chat_limits_example() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "chat_limits.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "alice (free): 20 sent, 5 refused" in out
    assert "bob (paid): 25 sent, 0 refused" in out
    assert 'RateLimit-Policy: "free";q=20;w=60' in out


def test_demo_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "scalekit", "tour", "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "60 allowed, 5 refused" in out
    assert "fixed_window: 10 + 10 = 20" in out
    assert "sliding_log: 10 + 0 = 10" in out
    assert "1,000 concurrent requests on a cold key: 1 query, 1000 answers" in out
    assert "the provider saw 3 of them" in out
    assert "probe goes through and closes it: 'HI'" in out
    assert "20,000 messages -> " in out

"""The single-window in-memory fast paths agree with the generic path, decision by decision."""

from __future__ import annotations

import random

import pytest

from scalekit import MemoryBackend, RateLimiter
from scalekit.testing import FakeClock


@pytest.mark.parametrize("algorithm", ["gcra", "token_bucket", "fixed_window", "sliding_window"])
@pytest.mark.parametrize("seed", range(4))
def test_fast_path_matches_the_generic_path(algorithm: str, seed: int) -> None:
    rng = random.Random(seed)
    rate = rng.choice(["3/second", "10/minute", "5/2 seconds", "100/hour"])
    max_keys = rng.choice([2, 5, 1000])
    clocks = FakeClock(), FakeClock()
    fast, generic = (
        RateLimiter(MemoryBackend(max_keys=max_keys), rate, algorithm=algorithm, clock=c)  # type: ignore[arg-type]
        for c in clocks
    )
    assert "hit" in vars(fast), "the fast path was not installed"
    for step in range(600):
        dt = rng.choice([0.0, 0.0, 0.0, 0.01, 0.2, 0.9, 3.0, 40.0])
        for c in clocks:
            c.advance(dt)
        key = rng.choice("abcdefg")
        cost = rng.choice([1, 1, 1, 2, 3, 11])
        a = fast.hit(key, cost)
        b = RateLimiter.hit(generic, key, cost)
        assert a[:3] == b[:3], f"step {step}: fast {a} != generic {b}"
        assert a[5:] == b[5:]
        assert a.reset_after == pytest.approx(b.reset_after, abs=1e-9), f"step {step}"
        assert a.retry_after == pytest.approx(b.retry_after, abs=1e-9), f"step {step}"
    assert fast.stats() == generic.stats()

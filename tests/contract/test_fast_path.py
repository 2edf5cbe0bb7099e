"""The rate limiter's fast path (scalekit/ratelimit/_fast.py) agrees with the generic
path -- the store calling the pure functions of _algorithms.py -- decision by decision.

The generic path has a single-window form (the pure function's result is the
decision) and the multi-window fold (:func:`~scalekit.ratelimit._algorithms.combine`);
the property test runs all three: the fast ``hit``, the single-window generic path,
and the fold over the same window plus one that never binds."""

from __future__ import annotations

import enum
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalekit import MemoryBackend, RateLimiter
from scalekit.ratelimit import Policy, Rate
from scalekit.testing import FakeClock

FAST_ALGORITHMS = ["gcra", "token_bucket", "fixed_window", "sliding_window"]


class Plan(enum.StrEnum):
    """A key the fast path does not take (not exactly a str): it goes to the slow path."""

    A = "a"


def _pair(algorithm: str, rate: Any, max_keys: int, start: float) -> tuple[Any, ...]:
    clocks = FakeClock(start), FakeClock(start)
    fast, generic = (
        RateLimiter(MemoryBackend(max_keys=max_keys), rate, algorithm=algorithm, clock=c)  # type: ignore[arg-type]
        for c in clocks
    )
    assert "hit" in vars(fast), "the fast path was not installed"
    return fast, generic, clocks


def _same(a: Any, b: Any, where: str) -> None:
    assert a[:3] == b[:3], f"{where}: fast {a} != generic {b}"
    assert a[5:] == b[5:], where
    assert a.reset_after == pytest.approx(b.reset_after, abs=1e-9), f"{where}: {a} != {b}"
    assert a.retry_after == pytest.approx(b.retry_after, abs=1e-9), f"{where}: {a} != {b}"


@pytest.mark.parametrize("algorithm", FAST_ALGORITHMS)
@pytest.mark.parametrize("seed", range(4))
def test_fast_path_matches_the_generic_path(algorithm: str, seed: int) -> None:
    rng = random.Random(seed)
    rate = rng.choice(["3/second", "10/minute", "5/2 seconds", "100/hour"])
    max_keys = rng.choice([2, 5, 1000])
    fast, generic, clocks = _pair(algorithm, rate, max_keys, 1_700_000_000.0)
    for step in range(600):
        dt = rng.choice([0.0, 0.0, 0.0, 0.01, 0.2, 0.9, 3.0, 40.0])
        for c in clocks:
            c.advance(dt)
        key = rng.choice("abcdefg")
        cost = rng.choice([1, 1, 1, 2, 3, 11])
        _same(fast.hit(key, cost), RateLimiter.hit(generic, key, cost), f"step {step}")
    assert fast.stats() == generic.stats()


# -- property: any sequence of hits, peeks, refunds, resets and clock steps ------------

_rates = st.builds(
    Rate,
    st.integers(1, 40),
    st.sampled_from([0.001, 0.5, 1.0, 2.0, 60.0, 3600.0]),
    burst=st.none() | st.integers(1, 60),
)
_dt = st.sampled_from([0.0, 0.0, 0.0, 1e-7, 1e-3, 0.01, 0.25, 0.5, 1.0, 3.0, 61.0]) | st.floats(
    0.0, 100.0
)
_key = st.sampled_from(["a", "b", "c", "d", "e", Plan.A])
_cost = st.sampled_from([1, 1, 1, 2, 3, 7, 41, 61])
_ops = st.lists(
    st.tuples(
        st.sampled_from(["hit"] * 6 + ["peek", "refund", "reset"]),
        _key,
        _cost,
        _dt,
    ),
    min_size=1,
    max_size=80,
)


@pytest.mark.parametrize("algorithm", FAST_ALGORITHMS)
@settings(max_examples=150, deadline=None)
@given(
    rate=_rates,
    max_keys=st.sampled_from([1, 2, 3, 1000]),
    start=st.sampled_from([0.0, 12_345.678, 1_700_000_000.0]),
    ops=_ops,
)
def test_fast_path_agrees_with_the_pure_algorithm(
    algorithm: str,
    rate: Rate,
    max_keys: int,
    start: float,
    ops: list[tuple[str, str, int, float]],
) -> None:
    fast, generic, clocks = _pair(algorithm, rate, max_keys, start)
    # the fold: the same window, and a shorter one that never binds (the stores'
    # max_keys apply per window, so the fold is compared where no window fills up)
    folded_clock = FakeClock(start)
    folded = RateLimiter(
        MemoryBackend(max_keys=1000),
        Policy([rate, Rate(10**12, rate.period / 2)], name=generic.policy.name),
        algorithm=algorithm,  # type: ignore[arg-type]
        clock=folded_clock,
    )
    clocks = (*clocks, folded_clock)
    for step, (op, key, cost, dt) in enumerate(ops):
        for c in clocks:
            c.advance(dt)
        where = f"step {step}: {op}({key!r}, {cost}) after +{dt}"
        if op == "hit":
            a, b = fast.hit(key, cost), RateLimiter.hit(generic, key, cost)
            _same(a, b, where)
            c = folded.hit(key, cost)
            if max_keys == 1000:
                _same(c, b, where)
        elif op == "peek":
            b = generic.peek(key, cost)
            _same(fast.peek(key, cost), b, where)
            c = folded.peek(key, cost)
            if max_keys == 1000:
                _same(c, b, where)
        elif op == "refund":
            for lim in (fast, generic, folded):
                lim.refund(key, cost)
        else:
            for lim in (fast, generic, folded):
                lim.reset(key)
    for key in "abcde":  # the states left behind are the same
        b = generic.peek(key)
        _same(fast.peek(key), b, f"final peek {key!r}")
        if max_keys == 1000:
            _same(folded.peek(key), b, f"final peek {key!r}")
    assert fast._default.key_count() == generic._default.key_count()
    assert fast.stats() == generic.stats()

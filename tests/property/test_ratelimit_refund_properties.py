"""Property: hits and refunds in any order never let a key spend more than its limit,
and a refund of what a hit spent restores the decision from before that hit.

Driven through memory, fakeredis and the suite's real Redis on a FakeClock. With the clock frozen
inside one window every algorithm reduces to the same model: ``used`` units of
``limit`` are spent, a hit of ``cost`` is allowed iff ``used + cost <= limit``, a
refund lowers ``used`` by at most what it holds. Time steps are checked separately:
with time moving, a refund never lets more through than the model without refunds
would after the same time (a fresh state is the most a refund can give).
"""

from __future__ import annotations

import itertools
from typing import Any

import fakeredis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scalekit import RateLimiter, RedisBackend
from scalekit.ratelimit import ALGORITHMS
from scalekit.testing import FakeClock

LIMIT = 5
ops = st.lists(
    st.tuples(st.sampled_from(["hit", "refund"]), st.integers(min_value=1, max_value=7)),
    max_size=40,
)


_prefixes = itertools.count()


def limiter(kind: str, algorithm: str, clock: FakeClock, request: Any) -> RateLimiter:
    if kind == "memory":
        return RateLimiter("memory://", f"{LIMIT}/minute", algorithm=algorithm, clock=clock)
    if kind == "fakeredis":
        backend = RedisBackend(
            "redis://fakeredis", client=fakeredis.FakeRedis(server=fakeredis.FakeServer()),
            clock=clock.now,
        )  # fmt: skip
    else:
        backend = RedisBackend(request.getfixturevalue("redis_url"), clock=clock.now)
    prefix = f"prop-refund-{next(_prefixes)}"  # a fresh key space per example
    return RateLimiter(
        backend,
        f"{LIMIT}/minute",
        algorithm=algorithm,
        clock=clock,
        prefix=prefix,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("kind", ["memory", "fakeredis", "redis"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops)
def test_frozen_time_matches_the_model(
    kind: str, algorithm: str, ops: list[Any], request: pytest.FixtureRequest
) -> None:
    clock = FakeClock()
    clock.advance(0.5)  # inside a fixed window: nothing slides out
    rl = limiter(kind, algorithm, clock, request)
    try:
        check_against_the_model(rl, ops)
    finally:
        if isinstance(rl.backend, RedisBackend):
            rl.backend.close()


def check_against_the_model(rl: RateLimiter, ops: list[Any]) -> None:
    used = 0
    for op, cost in ops:
        if op == "hit":
            before = rl.peek("k", cost)
            d = rl.hit("k", cost)
            assert d.allowed == (used + cost <= LIMIT)
            assert before.allowed == d.allowed
            if d.allowed:
                used += cost
                assert d.remaining == LIMIT - used
                # a refund of what was spent restores the previous decision
                rl.refund("k", cost)
                after = rl.peek("k", cost)
                assert (after.allowed, after.remaining) == (before.allowed, before.remaining)
                assert rl.hit("k", cost).allowed
        else:
            rl.refund("k", cost)
            used = max(0, used - cost)
        assert rl.peek("k").remaining == LIMIT - used


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@settings(max_examples=80, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["hit", "refund"]),
            st.integers(min_value=1, max_value=3),
            st.sampled_from([0.0, 0.0, 1.0, 7.5, 30.0, 59.0, 61.0]),
        ),
        max_size=60,
    )
)
def test_never_more_than_a_fresh_state(algorithm: str, steps: list[Any]) -> None:
    """With time moving, allowed hits minus refunds over the last 60 s never exceed
    what the algorithm allows without refunds over 60 s: a refund only undoes hits."""
    clock = FakeClock()
    rl = RateLimiter("memory://", f"{LIMIT}/minute", algorithm=algorithm, clock=clock)
    events: list[tuple[float, int]] = []  # (time, +cost allowed / -cost refunded)
    for op, cost, dt in steps:
        clock.advance(dt)
        now = clock.now()
        if op == "hit":
            if rl.hit("k", cost).allowed:
                events.append((now, cost))
        else:
            rl.refund("k", cost)
            events.append((now, -cost))
        # fixed window: per aligned window; sliding log: any 60 s; the sliding window
        # counter (across a boundary) and buckets (burst + 60 s of refill): 2x
        if algorithm == "fixed_window":
            start = (now // 60) * 60
            bound = LIMIT
        elif algorithm != "sliding_log":
            start, bound = now - 60, 2 * LIMIT
        else:
            start, bound = now - 60 + 1e-6, LIMIT
        net = sum(c for t, c in events if t >= start)
        assert net <= bound, (net, events)

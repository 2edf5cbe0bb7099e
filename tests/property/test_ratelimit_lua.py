"""The Lua scripts against the pure algorithms, under any workload hypothesis finds.

Each example runs one random sequence of hits and peeks (any time steps, costs,
keys, one or two windows, bursts) on the real Redis of the test suite and on
fakeredis, next to an in-memory limiter on the same fake clock: every decision
must be the same (times to the 2 us the integer-microsecond scripts may differ by).
This pins the integer arithmetic of ``lua/`` -- the fixed window's tagged INCRBY
and its all-or-nothing give-back, GCRA's relative state -- to ``algorithms.py``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scalekit import RateLimiter, RedisBackend
from scalekit.ratelimit import ALGORITHMS, Policy, Rate
from scalekit.testing import FakeClock

_prefixes = itertools.count()

steps = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.0, 1e-6, 1.3, 25.0, 50.0, 100.0, 370.0, 3000.0]),  # dt
        st.sampled_from(["a", "b"]),  # key
        st.integers(1, 6),  # cost
        st.booleans(),  # peek instead of hit
    ),
    min_size=1,
    max_size=60,
)
# Periods of tens of seconds or more: the server expires the scripts' keys on its own
# (real) clock, so a period shorter than a step takes on a loaded machine would let a
# key vanish between two steps of simulated time. The odd 33.3333 s keeps window
# edges that fall between microseconds.
policies = st.sampled_from(
    [
        [Rate(3, 100.0)],
        [Rate(5, 200.0, burst=3), Rate(12, 3000.0)],
        [Rate(2, 50.0), Rate(4, 150.0, burst=6)],
        [Rate(7, 33.3333)],
    ]
)


@pytest.fixture(scope="module", params=["fakeredis", "redis"])
def redis_client(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "fakeredis":
        yield fakeredis.FakeRedis()
        return
    import redis

    client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
    try:
        yield client
    finally:
        client.close()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rates=policies, workload=steps)
def test_lua_decisions_equal_the_pure_algorithms(
    redis_client: Any, algorithm: Any, rates: list[Rate], workload: list[Any]
) -> None:
    clock, ref_clock = FakeClock(), FakeClock()
    policy = Policy(rates)
    backend = RedisBackend("redis://test", client=redis_client, clock=clock.now)
    lim = RateLimiter(backend, policy, algorithm=algorithm, prefix=f"p{next(_prefixes)}")
    ref = RateLimiter("memory://", policy, algorithm=algorithm, clock=ref_clock)
    for i, (dt, key, cost, peek) in enumerate(workload):
        clock.advance(dt)
        ref_clock.advance(dt)
        if peek:
            got, want = lim.peek(key, cost), ref.peek(key, cost)
        else:
            got, want = lim.hit(key, cost), ref.hit(key, cost)
        assert got[:3] == want[:3], f"step {i}: {got} != {want}"
        assert got[5:] == want[5:], f"step {i}: {got} != {want}"
        for a, b in zip(got[3:5], want[3:5], strict=True):
            assert a == pytest.approx(b, abs=2e-6), f"step {i}: {got} != {want}"
    assert lim.stats()["backend_errors"] == 0

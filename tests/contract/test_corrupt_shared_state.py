"""A corrupt value in one key is that key's problem, for the shared primitives too.

The rate limiter and the cache have their own suites (test_ratelimit_corrupt.py,
test_cache_data_errors.py); this one covers the fleet-shared breaker state and the
sampling budget: a key of another type or holding garbage is reset through the one
guarded call (BackendGuard.call's ``reset``), counted, never raised to the caller and
never a guard trip; another key of the same Redis is untouched.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from conftest import call

from scalekit import RedisBackend
from scalekit.resilience import CircuitBreaker, State
from scalekit.resilience._shared import SharedState
from scalekit.sampling import Budget, Pipeline
from scalekit.testing import FakeClock

REDIS_KINDS = ["fakeredis", "redis", "redis-nopipe", "valkey"]
_names = itertools.count()


def corrupt(backend: RedisBackend, key: str, how: str) -> None:
    client = backend.sync_client
    client.delete(key)
    if how == "list":
        client.rpush(key, "x")
    elif how == "hash":
        client.hset(key, "a", "1")
    elif how == "set":
        client.sadd(key, "x")
    else:
        client.set(key, b"\xff\x00 not what any script wrote")


def ok() -> int:
    return 1


async def aok() -> int:
    return 1


CORRUPTIONS = ["list", "hash", "set", "garbage"]


@pytest.mark.parametrize("backend_kind", REDIS_KINDS)
@pytest.mark.parametrize("how", CORRUPTIONS)
async def test_a_corrupt_breaker_state_is_reset_not_raised(
    backend: RedisBackend, mode: str, clock: FakeClock, backend_kind: str, how: str
) -> None:
    prefix = f"cs{next(_names)}"
    victim_state = SharedState(backend, prefix=prefix, on_backend_error="fail_closed")
    other_state = SharedState(backend, prefix=prefix, on_backend_error="fail_closed")
    victim = CircuitBreaker("victim", record=ValueError, shared=victim_state, clock=clock)
    other = CircuitBreaker("other", record=ValueError, shared=other_state, clock=clock)
    run = (lambda b: b.call(ok)) if mode == "sync" else (lambda b: b.acall(aok))
    assert await call(run(victim)) == 1 and await call(run(other)) == 1
    before_other = list(backend.sync_client.scan_iter(f"{prefix}*other*"))
    for key in victim_state._keys:
        corrupt(backend, key, how)
    # fail_closed: a degraded decision would reject; a reset decides from a clean state
    assert [await call(run(victim)) for _ in range(5)] == [1] * 5
    assert victim_state._guard.errors == 0
    # the state keys are hashes: a hash with unknown fields reads as a fresh state
    assert victim_state._guard.corrupt >= (0 if how == "hash" else 1)
    assert victim.state == State.CLOSED
    assert await call(run(other)) == 1
    assert other_state._guard.corrupt == 0
    assert list(backend.sync_client.scan_iter(f"{prefix}*other*")) == before_other


@pytest.mark.parametrize("backend_kind", REDIS_KINDS)
@pytest.mark.parametrize("how", CORRUPTIONS)
async def test_a_corrupt_budget_counter_is_reset_not_raised(
    backend: RedisBackend, mode: str, clock: FakeClock, backend_kind: str, how: str
) -> None:
    prefix = f"cb{next(_names)}"

    def make(per: Callable[[Any], str]) -> tuple[Budget[Any], Pipeline[Any]]:
        b: Budget[Any] = Budget(
            "5/day", backend=backend, per=per, rng=lambda: 0.0, prefix=prefix, clock=clock
        )
        return b, Pipeline(b)

    budget, pipe = make(lambda item: str(item[0]))
    decide = (lambda item: pipe.decide(item)) if mode == "sync" else (lambda i: pipe.adecide(i))
    assert (await call(decide(("victim", 0)))).sampled
    assert (await call(decide(("other", 0)))).sampled
    corrupt(backend, budget._store.key("victim"), how)  # type: ignore[union-attr]
    got = [(await call(decide(("victim", i)))).sampled for i in range(6)]
    assert got == [True] * 5 + [False]  # a fresh window: exactly the target again
    assert budget._guard.errors == 0
    # a string the script cannot parse already reads as a fresh window; other types are
    # WRONGTYPE for its GET and go through the reset
    assert budget._guard.corrupt == (0 if how == "garbage" else 1)
    other = [(await call(decide(("other", i)))).sampled for i in range(5)]
    assert other == [True] * 4 + [False]  # untouched: one unit was spent before

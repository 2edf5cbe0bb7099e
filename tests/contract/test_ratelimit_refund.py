"""Refunds: every algorithm x memory, fakeredis, real Redis x sync, async.

A refund gives back what a key spent, in every window, never more than the current
window(s) hold: the limiter then decides as if the refunded hits had not happened.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import call

from scalekit import ConfigurationError
from scalekit.ratelimit import ALGORITHMS
from scalekit.testing import FakeClock

pytestmark = pytest.mark.parametrize("algorithm", ALGORITHMS)


async def allowed(limiter: Any, key: str, n: int, **kw: Any) -> list[bool]:
    return [(await call(limiter.hit(key, **kw))).allowed for _ in range(n)]


async def test_a_refund_restores_the_previous_decision(make: Any, algorithm: str) -> None:
    limiter = make("3/minute", algorithm=algorithm)
    assert await allowed(limiter, "k", 2) == [True, True]
    before = await call(limiter.peek("k"))
    assert (await call(limiter.hit("k"))).allowed
    assert not (await call(limiter.hit("k"))).allowed
    assert await call(limiter.refund("k")) is None
    after = await call(limiter.peek("k"))
    assert (after.allowed, after.remaining) == (before.allowed, before.remaining) == (True, 1)
    assert await allowed(limiter, "k", 2) == [True, False]


async def test_a_refund_of_a_cost(make: Any, algorithm: str) -> None:
    limiter = make("5/minute", algorithm=algorithm)
    assert (await call(limiter.hit("k", cost=3))).remaining == 2
    await call(limiter.refund("k", 2))
    assert (await call(limiter.peek("k"))).remaining == 4
    assert (await call(limiter.hit("k", cost=4))).allowed
    assert not (await call(limiter.hit("k"))).allowed


async def test_never_below_a_fresh_state(make: Any, algorithm: str) -> None:
    limiter = make("3/minute", algorithm=algorithm)
    await call(limiter.hit("k"))
    await call(limiter.refund("k", 50))
    await call(limiter.refund("nobody", 3))  # a key that never spent: nothing happens
    assert (await call(limiter.peek("k"))).remaining == 3
    assert await allowed(limiter, "k", 4) == [True, True, True, False]
    assert await allowed(limiter, "nobody", 4) == [True, True, True, False]


async def test_nothing_from_windows_that_are_over(
    make: Any, clock: FakeClock, algorithm: str
) -> None:
    limiter = make("3/minute", algorithm=algorithm)
    assert await allowed(limiter, "k", 3) == [True, True, True]
    clock.advance(121.0)  # every algorithm is fresh again
    await call(limiter.refund("k", 3))
    assert await allowed(limiter, "k", 4) == [True, True, True, False]


async def test_every_window_gets_it_back(make: Any, clock: FakeClock, algorithm: str) -> None:
    limiter = make("2/second; 3/minute", algorithm=algorithm)
    assert await allowed(limiter, "k", 3) == [True, True, False]
    await call(limiter.refund("k", 2))
    assert await allowed(limiter, "k", 3) == [True, True, False]
    clock.advance(2.0)
    # the minute holds 2 + 2 - 2 = 2 of 3: one more
    assert await allowed(limiter, "k", 2) == [True, False]


async def test_tiers(make: Any, algorithm: str) -> None:
    limiter = make({"free": "1/minute", "paid": "2/minute"}, algorithm=algorithm)
    assert await allowed(limiter, "k", 2, tier="free") == [True, False]
    assert await allowed(limiter, "k", 3, tier="paid") == [True, True, False]
    await call(limiter.refund("k", tier="free"))
    assert await allowed(limiter, "k", 2, tier="free") == [True, False]
    assert await allowed(limiter, "k", 1, tier="paid") == [False]
    with pytest.raises(ConfigurationError):
        await call(limiter.refund("k", tier="gold"))


@pytest.mark.parametrize(("key", "cost"), [("", 1), ("k", 0), ("k", -1), ("k", True), (3, 1)])
async def test_bad_arguments(make: Any, algorithm: str, key: Any, cost: Any) -> None:
    limiter = make("3/minute", algorithm=algorithm)
    with pytest.raises(ConfigurationError):
        await call(limiter.refund(key, cost))

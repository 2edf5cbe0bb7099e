"""The rate-limit contract: every algorithm x memory, fakeredis, real Redis x sync, async."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from conftest import call
from redis.cluster import key_slot

from scalekit import ConfigurationError, RateLimiter, RateLimitExceeded
from scalekit.ratelimit import ALGORITHMS, Policy, Rate
from scalekit.testing import FakeClock

pytestmark = pytest.mark.parametrize("algorithm", ALGORITHMS)


async def hits(limiter: Any, key: str, n: int, **kw: Any) -> list[Any]:
    return [await call(limiter.hit(key, **kw)) for _ in range(n)]


async def test_allows_up_to_the_limit_then_denies(make: Any, algorithm: str) -> None:
    limiter = make("3/minute", algorithm=algorithm)
    decisions = await hits(limiter, "user:1", 4)
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    denied = decisions[-1]
    assert denied.limit == 3
    assert denied.period == 60.0
    assert denied.policy == "3/minute"
    assert 0 < denied.retry_after <= 60
    assert all(d.retry_after == 0 for d in decisions[:3])
    assert all(0 <= d.reset_after <= 120 for d in decisions)
    assert bool(decisions[0]) and not bool(denied)


async def test_retry_after_is_exact(make: Any, clock: FakeClock, algorithm: str) -> None:
    limiter = make("3/minute", algorithm=algorithm)
    await hits(limiter, "k", 3)
    denied = await call(limiter.hit("k"))
    assert not denied.allowed
    clock.advance(denied.retry_after - 1e-3)
    assert not (await call(limiter.hit("k"))).allowed, "allowed before retry_after"
    clock.advance(2e-3)
    assert (await call(limiter.hit("k"))).allowed, "still denied after retry_after"


async def test_windows_are_all_or_nothing(make: Any, clock: FakeClock, algorithm: str) -> None:
    limiter = make("2/second; 3/minute", algorithm=algorithm)
    assert [d.allowed for d in await hits(limiter, "k", 3)] == [True, True, False]
    # The third hit was refused by the per-second window; it must not have consumed
    # from the per-minute window, which therefore still has one unit left.
    clock.advance(2.0)
    last, refused = await hits(limiter, "k", 2)
    assert last.allowed
    assert not refused.allowed
    assert (refused.limit, refused.period) == (3, 60.0)


async def test_cost_consumes_that_many(make: Any, algorithm: str) -> None:
    limiter = make("5/minute", algorithm=algorithm)
    a = await call(limiter.hit("k", cost=3))
    b = await call(limiter.hit("k", cost=3))
    c = await call(limiter.hit("k", cost=2))
    assert (a.allowed, a.remaining) == (True, 2)
    assert (b.allowed, b.remaining) == (False, 2)
    assert (c.allowed, c.remaining) == (True, 0)


async def test_cost_above_the_limit_is_a_clear_denial(make: Any, algorithm: str) -> None:
    limiter = make("3/minute", algorithm=algorithm)
    d = await call(limiter.hit("k", cost=4))
    assert not d.allowed
    assert math.isinf(d.retry_after)
    assert (await call(limiter.hit("k", cost=3))).allowed, "the refused hit consumed"
    with pytest.raises(RateLimitExceeded) as info:
        await call(limiter.acquire("k", cost=4, timeout=None))
    assert math.isinf(info.value.retry_after)


async def test_bad_calls_raise_configuration_errors(make: Any, algorithm: str) -> None:
    limiter = make("3/minute", algorithm=algorithm)
    for key, cost in (("", 1), (None, 1), ("k", 0), ("k", -1), ("k", 1.5), ("k", True)):
        with pytest.raises(ConfigurationError):
            await call(limiter.hit(key, cost=cost))


async def test_peek_consumes_nothing(make: Any, algorithm: str) -> None:
    limiter = make("3/minute", algorithm=algorithm)
    for _ in range(5):
        p = await call(limiter.peek("k"))
        assert (p.allowed, p.remaining) == (True, 3)
    assert [d.allowed for d in await hits(limiter, "k", 4)] == [True, True, True, False]
    p = await call(limiter.peek("k"))
    assert not p.allowed and p.retry_after > 0


async def test_reset_forgets_the_key(make: Any, algorithm: str) -> None:
    limiter = make("2/minute; 3/hour", algorithm=algorithm)
    await hits(limiter, "k", 2)
    await call(limiter.reset("k"))
    assert [d.allowed for d in await hits(limiter, "k", 3)] == [True, True, False]


async def test_keys_are_isolated_and_escaped(make: Any, algorithm: str) -> None:
    limiter = make("1/minute", algorithm=algorithm)
    keys = ["a:b", "a", "{a}", "a%3Ab", "a b", "a}:{b", "ключ"]
    for k in keys:
        assert (await call(limiter.hit(k))).allowed, k
    for k in keys:
        assert not (await call(limiter.hit(k))).allowed, k


async def test_limiters_with_different_names_do_not_share(make: Any, algorithm: str) -> None:
    chat = make("1/minute", algorithm=algorithm, name="chat")
    images = make("1/minute", algorithm=algorithm, name="images", prefix=chat._prefix)
    assert (await call(chat.hit("u"))).allowed
    assert (await call(images.hit("u"))).allowed


async def test_tiers_are_chosen_per_call(make: Any, algorithm: str) -> None:
    limiter = make({"free": "2/minute", "paid": "5/minute"}, algorithm=algorithm)
    free = await hits(limiter, "u1", 3, tier="free")
    paid = await hits(limiter, "u1", 6, tier="paid")
    assert [d.allowed for d in free] == [True, True, False]
    assert [d.allowed for d in paid] == [True] * 5 + [False]
    assert free[0].policy == "free" and paid[0].policy == "paid"
    with pytest.raises(ConfigurationError, match="unknown tier 'gold'"):
        await call(limiter.hit("u1", tier="gold"))
    with pytest.raises(ConfigurationError, match="tiered"):
        await call(limiter.hit("u1"))


async def test_acquire_waits_then_succeeds_or_times_out(
    make: Any, clock: FakeClock, algorithm: str
) -> None:
    limiter = make("1/second", algorithm=algorithm)
    assert (await call(limiter.acquire("k"))).allowed
    assert clock.sleeps == []
    d = await call(limiter.acquire("k", timeout=5))
    assert d.allowed
    assert 0 < sum(clock.sleeps) <= 2.0
    with pytest.raises(RateLimitExceeded) as info:
        await call(limiter.acquire("k", timeout=0.01))
    assert info.value.retry_after > 0.01
    assert info.value.key == "k"


REDIS_ONLY = pytest.mark.parametrize("backend_kind", ["fakeredis", "redis"], indirect=True)


@REDIS_ONLY
async def test_every_redis_key_expires_and_shares_the_subject_slot(
    make: Any, redis_client: Any, clock: FakeClock, algorithm: str
) -> None:
    limiter = make("2/second; 10/minute; 100/day", algorithm=algorithm)
    await hits(limiter, "user:{42}", 3)
    keys = redis_client.keys("*")
    assert keys, "nothing was written"
    assert {key_slot(k) for k in keys} == {key_slot(b"{user%3A%7B42%7D}")}
    for k in keys:
        assert b"{user%3A%7B42%7D}" in k
        assert redis_client.pttl(k) > 0, f"{k!r} has no expiry"


@REDIS_ONLY
async def test_decisions_match_the_memory_backend(
    make: Any, clock: FakeClock, algorithm: str
) -> None:
    """Differential test: one pseudo-random workload, identical decisions."""
    ref_clock = FakeClock()
    policy = Policy([Rate(5, 2.0, burst=3), Rate(12, 30.0)])
    reference = RateLimiter("memory://", policy, algorithm=algorithm, clock=ref_clock)  # type: ignore[arg-type]
    limiter = make(policy, algorithm=algorithm)
    rng = random.Random(f"{algorithm}-contract")
    for step in range(150):
        dt = rng.choice([0.0, 0.0, 0.05, 0.3, 0.7, 1.9, 4.0])
        clock.advance(dt)
        ref_clock.advance(dt)
        key = rng.choice(["a", "b"])
        cost = rng.choice([1, 1, 1, 2, 4])
        if rng.random() < 0.15:
            expected, got = reference.peek(key, cost), await call(limiter.peek(key, cost))
        else:
            expected, got = reference.hit(key, cost), await call(limiter.hit(key, cost))
        assert got[:3] == expected[:3], f"step {step}: {got} != {expected}"
        assert got[5:] == expected[5:]
        # Redis works in whole microseconds: the test clock's float time is floored to
        # one and the times it reports are rounded up to one (a retry_after is never
        # shorter than needed), so they may differ from the float arithmetic by 2 us.
        for a, b in zip(got[3:5], expected[3:5], strict=True):
            assert a == pytest.approx(b, abs=2e-6), f"step {step}: {got} != {expected}"

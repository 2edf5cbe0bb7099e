"""A data error is not an outage: a rate-limit key whose Redis value is not what the
script expects (garbage, another type, another algorithm's state) is reset and decided
again from a clean state; every other key is decided exactly, the guard never trips.

Every algorithm x fakeredis, real Redis x sync, async.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from conftest import call
from twins import in_mode

from scalekit import RedisBackend
from scalekit.ratelimit import ALGORITHMS, ConcurrencyLimiter

pytestmark = pytest.mark.parametrize("backend_kind", ["fakeredis", "redis"], indirect=True)
EVERY_ALGORITHM = pytest.mark.parametrize("algorithm", ALGORITHMS)

#: another algorithm's state, as each script writes it
_FOREIGN = {
    "fixed_window": b"1700000000000000 0.25",  # gcra's "<t> <ahead>"
    "sliding_window": b"123456789",  # fixed window's integer
    "sliding_log": b"17 1 2",  # a string where a sorted set and a hash belong
    "token_bucket": b"1 2 3",  # sliding window's "<idx> <prev> <cur>"
    "gcra": b"1 2 3",
}

CORRUPTIONS = ["garbage", "hash", "list", "other-algorithm"]


def corrupt(client: Any, keys: list[bytes | str], how: str, algorithm: str) -> None:
    for k in keys:
        client.delete(k)
        if how == "garbage":
            client.set(k, b"\xff\xfe not a number \x00")
        elif how == "hash":
            client.hset(k, "c", "x")
        elif how == "list":
            client.rpush(k, "a", "b")
        else:
            client.set(k, _FOREIGN[algorithm])


@EVERY_ALGORITHM
@pytest.mark.parametrize("how", CORRUPTIONS)
async def test_a_corrupt_key_is_reset_and_other_keys_stay_exact(
    make: Any, redis_client: Any, algorithm: str, how: str
) -> None:
    limiter = make("10/hour; 100/day", algorithm=algorithm)
    store = limiter._default
    assert [(await call(limiter.hit("B"))).remaining for _ in range(3)] == [9, 8, 7]
    corrupt(redis_client, store.keys("A"), how, algorithm)

    got = [await call(limiter.hit("A")) for _ in range(30)]
    assert sum(d.allowed for d in got) == 10  # exactly the limit, from a clean state
    assert [d.remaining for d in got[:10]] == list(range(9, -1, -1))
    # B was never touched: its count goes on where it was
    assert (await call(limiter.hit("B"))).remaining == 6
    stats = limiter.stats()
    assert stats["backend_errors"] == 0 and stats["backend_episodes"] == 0
    assert stats["degraded"] == 0
    if how in ("hash", "list") or (how == "garbage" and algorithm == "fixed_window"):
        assert stats["corrupt_keys"] >= 1  # a server error about the value: counted
    for k in store.keys("A"):
        assert redis_client.pttl(k) > 0, f"{k!r} has no expiry after the reset"


@EVERY_ALGORITHM
async def test_peek_on_a_corrupt_key_is_a_clean_state(
    make: Any, redis_client: Any, algorithm: str
) -> None:
    limiter = make("3/minute", algorithm=algorithm)
    corrupt(redis_client, limiter._default.keys("A"), "hash", algorithm)
    p = await call(limiter.peek("A"))
    assert (p.allowed, p.remaining) == (True, 3)
    assert limiter.stats()["backend_errors"] == 0


@EVERY_ALGORITHM
async def test_a_corrupt_key_is_logged_once_per_episode(
    make: Any, redis_client: Any, algorithm: str, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = make("10/hour", algorithm=algorithm)
    keys = limiter._default.keys("A")
    with caplog.at_level(logging.WARNING, logger="scalekit.ratelimit"):
        corrupt(redis_client, keys, "list", algorithm)
        for _ in range(5):
            await call(limiter.hit("A"))
        corrupt(redis_client, keys, "hash", algorithm)
        await call(limiter.hit("A"))
    warnings = [r for r in caplog.records if "is not what the" in r.getMessage()]
    assert len(warnings) == 2, [r.getMessage() for r in warnings]
    assert limiter.stats()["corrupt_keys"] == 2


@EVERY_ALGORITHM
async def test_a_redeploy_with_another_algorithm_starts_clean(make: Any, algorithm: str) -> None:
    """Same name and prefix, another algorithm: its own keys, no collision."""
    first = make("2/hour", algorithm=algorithm, name="api")
    assert [(await call(first.hit("u"))).allowed for _ in range(3)] == [True, True, False]
    for other in ALGORITHMS:
        if other == algorithm:
            continue
        again = make("2/hour", algorithm=other, name="api", prefix=first._prefix)
        d = await call(again.hit("u"))
        assert (d.allowed, d.remaining) == (True, 1), other
        assert again.stats()["corrupt_keys"] == 0


async def test_a_corrupt_lease_set_is_reset(backend: Any, redis_client: Any, mode: str) -> None:
    cc = in_mode(ConcurrencyLimiter(backend, 2, name=f"cc-{mode}"), mode)
    other = await call(cc.try_acquire("B"))
    assert other is not None
    key = cc._redis_call("count", "A", "")[0][0]
    redis_client.set(key, "garbage")
    first = await call(cc.try_acquire("A"))
    second = await call(cc.try_acquire("A"))
    assert first is not None and second is not None
    assert await call(cc.try_acquire("A")) is None  # exactly the limit
    assert await call(cc.in_flight("B")) == 1
    assert cc.corrupt_keys == 1
    assert cc._guard.errors == 0


def impossible_state(algorithm: str, now: float, limit: int, period_us: int) -> bytes | None:
    """A value that parses but that no hit writes (a count above the limit, a TAT
    centuries ahead): without a check it would deny the key until its expiry, or for
    ever if it has none."""
    now_us = int(now * 1_000_000)
    idx = now_us // period_us
    if algorithm == "fixed_window":
        s = 2 * limit + 1
        return str((idx % (2**53 // s)) * s + limit + 3).encode()
    if algorithm == "sliding_window":
        return f"{idx} {limit + 5} {limit + 5}".encode()
    if algorithm in ("gcra", "token_bucket"):
        return f"{now_us} 1e300".encode()
    return None


@EVERY_ALGORITHM
async def test_a_state_no_hit_writes_is_reset(
    make: Any, redis_client: Any, clock: Any, algorithm: str
) -> None:
    limiter = make("10/hour", algorithm=algorithm)
    keys = limiter._default.keys("A")
    value = impossible_state(algorithm, clock.now(), 10, 3_600_000_000)
    if value is None:  # sliding_log: a total in its hash that the log does not hold
        redis_client.hset(keys[1], "t", 999_999)
    else:
        redis_client.set(keys[0], value)  # no expiry, as a stray write would leave it
    got = [await call(limiter.hit("A")) for _ in range(30)]
    assert sum(d.allowed for d in got) == 10
    assert limiter.stats()["backend_errors"] == 0


class _RewritingBackend(RedisBackend):
    """A hostile writer that wins every race: whenever the store deletes a corrupt key,
    the garbage is back before the store decides again (real Redis, real errors)."""

    def delete(self, keys: Any) -> None:
        super().delete(keys)
        for k in keys:
            self.sync_client.hset(k, "x", "y")

    async def adelete(self, keys: Any) -> None:
        self.delete(keys)


async def test_a_key_corrupted_again_and_again_costs_that_key_only(
    backend: Any, redis_client: Any, mode: str, clock: Any
) -> None:
    from scalekit.ratelimit import RateLimiter

    hostile = _RewritingBackend(
        "redis://hostile",
        client=redis_client,
        async_client_factory=backend._async_factory or (lambda: backend.async_client()),
        clock=clock.now,
    )
    limiter = in_mode(
        RateLimiter(hostile, "3/hour", on_backend_error="fail_closed", backend_cooldown=7.0),
        mode,
    )
    redis_client.hset(limiter._default.keys("A")[0], "x", "y")
    d = await call(limiter.hit("A"))
    assert (d.allowed, d.retry_after) == (False, 7.0)  # refused, not to be retried at once
    assert [(await call(limiter.hit("B"))).allowed for _ in range(4)] == [True] * 3 + [False]
    stats = limiter.stats()
    assert stats["backend_errors"] == 0 and stats["backend_episodes"] == 0
    assert stats["degraded"] == 1 and stats["corrupt_keys"] == 1


@EVERY_ALGORITHM
@pytest.mark.parametrize("how", CORRUPTIONS)
async def test_a_refund_on_a_corrupt_key_resets_it(
    make: Any, redis_client: Any, algorithm: str, how: str
) -> None:
    limiter = make("3/hour", algorithm=algorithm)
    store = limiter._default
    assert [(await call(limiter.hit("B"))).allowed for _ in range(2)] == [True, True]
    corrupt(redis_client, store.keys("A"), how, algorithm)
    await call(limiter.refund("A"))  # never raises: that key's problem
    assert [(await call(limiter.hit("A"))).allowed for _ in range(4)] == [True] * 3 + [False]
    assert [(await call(limiter.hit("B"))).allowed for _ in range(2)] == [True, False]
    assert limiter._guard.errors == 0

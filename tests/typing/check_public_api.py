"""Checked by ``mypy --strict`` (tests/typing/test_typing.py); never imported at run time.

Lines marked ``# E: <code>`` must produce exactly that mypy error code; every other
line must type-check.
"""

from __future__ import annotations

from typing import assert_type

from scalekit import Decision, RateLimiter, primitive_of, rate_limited
from scalekit.ratelimit import ConcurrencyLimiter, Lease, Policy, Rate

limiter = RateLimiter("memory://", "60/hour", algorithm="gcra")
assert_type(limiter.hit("user:1"), Decision)
assert_type(limiter.hit("user:1", cost=2).retry_after, float)
assert_type(limiter.peek("user:1").allowed, bool)
RateLimiter("memory://", Policy([Rate(5, 60.0, burst=2)]), on_backend_error="fail_closed")
RateLimiter("memory://", {"free": "20/minute", "paid": "100/minute"})
RateLimiter("memory://", "60/hour", algorithm="leaky_bucket")  # E: arg-type
RateLimiter("memory://", "60/hour", on_backend_error="ignore")  # E: arg-type
RateLimiter("memory://", "60/hour", algoritm="gcra")  # E: call-arg


async def use_async() -> None:
    assert_type(await limiter.ahit("k"), Decision)
    assert_type(await limiter.apeek("k", 2), Decision)
    assert_type(await limiter.aacquire("k", timeout=1.0), Decision)
    await limiter.ahit(42)  # E: arg-type
    async with cc.ahold("k") as alease:
        assert_type(alease, Lease)
    assert_type(await cc.atry_acquire("k"), Lease | None)


@rate_limited("10/minute", key=lambda user_id, text: f"user:{user_id}")
def send(user_id: int, text: str) -> str:
    return text


assert_type(send(1, "hi"), str)
send("one", "hi")  # E: arg-type
send(1)  # E: call-arg


@rate_limited(limiter, key="global")
async def fetch(url: str) -> bytes:
    return b""


async def use_fetch() -> None:
    assert_type(await fetch("x"), bytes)


# one accessor from any decorated function to its primitive, typed by the kind asked for
assert_type(primitive_of(send, RateLimiter), RateLimiter)
assert_type(primitive_of(fetch, RateLimiter).stats().allowed, int)
primitive_of(send, "RateLimiter")  # E: arg-type


cc = ConcurrencyLimiter("memory://", 2)
with cc.hold("k") as lease:
    assert_type(lease, Lease)


# --- scalekit.pools / scalekit.batching

from scalekit.batching import DataLoader, LoaderStats  # noqa: E402
from scalekit.pools import PgPool, PoolSettings, PoolStats  # noqa: E402


async def author_names(ids: list[int]) -> list[str | BaseException]:
    return [str(i) for i in ids]


authors_loader = DataLoader(author_names, max_batch_size=100)


async def use_loader() -> None:
    assert_type(await authors_loader.load(1), str)
    await authors_loader.load("one")  # E: arg-type
    assert_type(authors_loader.stats(), LoaderStats)


PoolSettings(url="postgresql://h/db", pooler="pgbouncer-transaction")
PoolSettings(url="postgresql://h/db", pooler="pgpool")  # E: arg-type
PoolSettings("postgresql://h/db")  # E: call-arg
assert_type(PgPool("postgresql://h/db").stats(), PoolStats)

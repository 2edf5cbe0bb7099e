"""Every input of the rate limiters checked once, the same way on every backend
(regressions from the hardening review; each failed before its fix)."""

from __future__ import annotations

import enum
import math
from typing import Any

import pytest
from conftest import call

from scalekit import ConfigurationError
from scalekit._validate import MAX_COUNT
from scalekit.ratelimit import (
    ALGORITHMS,
    ConcurrencyLimiter,
    Policy,
    Rate,
    RateLimiter,
)
from scalekit.testing import FakeClock


class Plan(enum.StrEnum):
    FREE = "free"


async def test_peek_refuses_a_bool_cost_like_hit(make: Any) -> None:
    limiter = make("3/minute")
    for cost in (True, False, 1.0, 0, -1):
        with pytest.raises(ConfigurationError, match="cost"):
            await call(limiter.peek("k", cost))
        with pytest.raises(ConfigurationError, match="cost"):
            await call(limiter.hit("k", cost))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_a_str_subclass_key_is_its_plain_value(make: Any, algorithm: str) -> None:
    limiter = make("2/minute", algorithm=algorithm)
    assert (await call(limiter.hit(Plan.FREE))).allowed
    assert (await call(limiter.peek(Plan.FREE))).remaining == 1
    assert (await call(limiter.hit("free"))).remaining == 0  # the same key
    assert limiter.stats()["backend_errors"] == 0


async def test_acquire_refuses_a_nan_timeout(make: Any) -> None:
    limiter = make("1/minute")
    for bad in (math.nan, -1.0, True, "1"):
        with pytest.raises(ConfigurationError, match="timeout"):
            await call(limiter.acquire("k", timeout=bad))


def test_concurrency_acquire_refuses_a_nan_timeout() -> None:
    cc = ConcurrencyLimiter("memory://", 1)
    with pytest.raises(ConfigurationError, match="timeout"):
        cc.acquire("k", timeout=math.nan)


@pytest.mark.parametrize("cls", [RateLimiter, ConcurrencyLimiter])
def test_backend_cooldown_refuses_a_bool(cls: Any) -> None:
    arg = "1/second" if cls is RateLimiter else 1
    for bad in (True, False, math.nan, math.inf, 0, -1):
        with pytest.raises(ConfigurationError, match="backend_cooldown"):
            cls("memory://", arg, backend_cooldown=bad)


def test_rates_beyond_what_redis_represents_are_refused_at_construction() -> None:
    with pytest.raises(ConfigurationError, match="at most"):
        Rate(1, 1e15)
    with pytest.raises(ConfigurationError, match=str(MAX_COUNT)):
        Rate(MAX_COUNT + 1, 1.0)
    with pytest.raises(ConfigurationError, match=str(MAX_COUNT)):
        Rate(10, 1.0, burst=10**15)
    with pytest.raises(ConfigurationError, match=str(MAX_COUNT)):
        Rate.parse("1000000000000000/hour")
    with pytest.raises(ConfigurationError, match="microsecond"):
        Rate(1, 1e-7)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_the_largest_limit_is_exact_on_every_backend(make: Any, algorithm: str) -> None:
    """10**12 (MAX_COUNT) travels as an exact integer (once: int(b"1e+15") crashed)."""
    limiter = make(Rate(MAX_COUNT, 3600.0), algorithm=algorithm)
    d = await call(limiter.hit("k", 3))
    assert (d.allowed, d.remaining) == (True, MAX_COUNT - 3)


@pytest.mark.parametrize(
    "text",
    [
        "\u0661\u0660/minute",  # Arabic-Indic digits
        "10/\u0661 minute",
        "10\u00a0/minute",  # non-breaking spaces
        "10/minute\u00a0",
        "10/mi\u0301n",
    ],
)
def test_rate_strings_are_ascii_only(text: str) -> None:
    with pytest.raises(ConfigurationError, match="malformed rate"):
        Rate.parse(text)


def test_periods_are_kept_and_written_exactly() -> None:
    r = Rate(2, 3600.0004)
    assert r.period == 3600.0004 and r.period_us == 3_600_000_400
    assert str(r) == "2/3600.0004 seconds"
    assert Rate.parse(str(r)) == r
    assert Rate(2, 3600) != r


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_periods_differing_below_a_millisecond_never_share_state(
    make: Any, algorithm: str
) -> None:
    """3600 and 3600.0004 shared one Redis key (``%g``): 50 of 50 hits passed a limit of 2."""
    limiter = make(Policy([Rate(2, 3600.0), Rate(1000, 3600.0004)]), algorithm=algorithm)
    got = [(await call(limiter.hit("k"))).allowed for _ in range(50)]
    assert sum(got) == 2


@pytest.mark.parametrize("algorithm", ["gcra", "token_bucket"])
async def test_buckets_at_ten_million_per_second_admit_the_burst_only(
    make: Any, clock: FakeClock, algorithm: str
) -> None:
    """The 1 us slack once let 10 extra units through per instant at 10**7/second."""
    limiter = make(Rate(10**7, 1.0, burst=5), algorithm=algorithm)
    got = [(await call(limiter.hit("k"))).allowed for _ in range(20)]
    assert sum(got) == 5
    clock.advance(1.0)  # the bucket is full again
    assert sum([(await call(limiter.hit("k"))).allowed for _ in range(20)]) == 5

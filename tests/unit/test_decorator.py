from __future__ import annotations

import pytest

from scalekit import (
    RateLimiter,
    RateLimitExceeded,
    primitive_of,
    rate_limited,
)
from scalekit.testing import FakeClock


def test_sync_function_is_limited_per_key() -> None:
    clock = FakeClock()
    limiter = RateLimiter("memory://", "2/minute", clock=clock)

    @rate_limited(limiter, key=lambda user_id, text: f"user:{user_id}")
    def send(user_id: int, text: str) -> str:
        """Send a chat message."""
        return f"{user_id}:{text}"

    assert send(1, "a") == "1:a"
    assert send(1, text="b") == "1:b"
    with pytest.raises(RateLimitExceeded) as info:
        send(1, "c")
    assert info.value.retry_after > 0
    assert info.value.key == "user:1"
    assert send(2, "x") == "2:x"
    assert send.__name__ == "send" and send.__doc__ == "Send a chat message."
    clock.advance(120)
    assert send(1, "d") == "1:d"


async def test_async_function_with_a_policy_string_and_tiers() -> None:
    calls: list[str] = []

    @rate_limited(
        {"free": "1/minute", "paid": "3/minute"},
        key=lambda user, tier: user,
        tier=lambda user, tier: tier,
        clock=FakeClock(),
    )
    async def generate(user: str, tier: str) -> str:
        calls.append(user)
        return user

    assert await generate("u1", "free") == "u1"
    with pytest.raises(RateLimitExceeded):
        await generate("u1", "free")
    for _ in range(3):
        await generate("u2", "paid")
    with pytest.raises(RateLimitExceeded):
        await generate("u2", "paid")
    assert calls == ["u1", "u2", "u2", "u2"], "a denied call must not run the function"


async def test_cost_callable_and_a_limiter_shared_with_sync_code() -> None:
    limiter = RateLimiter("memory://", "10/minute", clock=FakeClock())

    @rate_limited(limiter, key="global", cost=lambda n: n)
    async def batch(n: int) -> int:
        return n

    assert await batch(6) == 6
    with pytest.raises(RateLimitExceeded):
        await batch(5)
    assert limiter.hit("global", 3).allowed  # sync callers spend the same windows
    with pytest.raises(RateLimitExceeded):
        await batch(2)
    assert await batch(1) == 1
    assert primitive_of(batch, RateLimiter) is limiter

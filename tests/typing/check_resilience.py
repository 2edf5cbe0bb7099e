"""Checked by ``mypy --strict`` (tests/typing/test_resilience_typing.py); never imported
at run time. Lines marked ``# E: <code>`` must produce exactly that mypy error code;
every other line must type-check.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import assert_type

from scalekit.resilience import (
    BreakerSnapshot,
    Bulkhead,
    CircuitBreaker,
    State,
    bulkhead,
    circuit_breaker,
    deadline,
    remaining,
    retry,
    timeout,
)

breaker = CircuitBreaker("dep", record=ConnectionError, failure_threshold=3)
CircuitBreaker("dep")  # E: call-arg


@breaker
def charge(amount: int, currency: str = "EUR") -> str:
    return f"{amount} {currency}"


@breaker
async def acharge(amount: int) -> float:
    return amount * 1.0


assert_type(charge(5), str)
charge("5")  # E: arg-type
assert_type(acharge(5), Awaitable[float])
assert_type(breaker.state, State)
assert_type(breaker.snapshot(), BreakerSnapshot)
assert_type(breaker.call(charge, 3, currency="USD"), str)


@circuit_breaker("solo", record=(TimeoutError, ConnectionError))
def solo(x: int) -> int:
    return x


assert_type(solo(1), int)


@retry(on=ConnectionError, attempts=3, timeout=10.0)
def fetch(url: str) -> bytes:
    return url.encode()


assert_type(fetch("u"), bytes)
fetch(1)  # E: arg-type
retry(attempts=3)  # E: call-arg


@retry(on=ConnectionError)
@timeout(2.0)
@Bulkhead("b", max_concurrent=2)
async def composed(prompt: str) -> str:
    return prompt


async def use() -> None:
    assert_type(await composed("x"), str)
    with deadline(1.0):
        assert_type(remaining(), float | None)


@bulkhead(max_concurrent=1)
def limited(n: int) -> int:
    return n


assert_type(limited(1), int)

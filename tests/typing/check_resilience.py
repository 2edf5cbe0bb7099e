"""Checked by ``mypy --strict`` (tests/typing/test_resilience_typing.py); never imported
at run time. Lines marked ``# E: <code>`` must produce exactly that mypy error code;
every other line must type-check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, assert_type

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
from scalekit.sampling import BackgroundTasks

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
pending_charge = acharge(5)  # not Awaitable: create_task() takes it
_ = assert_type(pending_charge, Coroutine[Any, Any, float])
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


# a wrapped coroutine function stays a coroutine function for the type checker
# (issue 15): create_task() and BackgroundTasks.spawn() take what it returns


@circuit_breaker("solo-async", record=ConnectionError)
async def solo_async(x: int) -> int:
    return x


@retry(on=ConnectionError)
async def retried(x: int) -> int:
    return x


@timeout(1.0)
async def timed(x: int) -> int:
    return x


@bulkhead(max_concurrent=1)
async def bounded(x: int) -> int:
    return x


async def spawn_them(tasks: BackgroundTasks) -> None:
    pending = composed("x")
    _ = assert_type(pending, Coroutine[Any, Any, str])
    running: list[asyncio.Task[object]] = []
    for coro in (acharge(1), solo_async(1), retried(1), timed(1), bounded(1), composed("x")):
        running.append(asyncio.create_task(coro))
        tasks.spawn(coro)
    assert_type(await asyncio.create_task(acharge(1)), float)
    assert_type(await asyncio.create_task(retried(1)), int)
    assert_type(await asyncio.create_task(timed(1)), int)
    assert_type(await asyncio.create_task(bounded(1)), int)
    assert_type(await asyncio.create_task(solo_async(1)), int)
    assert_type(await breaker.acall(acharge, 2), float)

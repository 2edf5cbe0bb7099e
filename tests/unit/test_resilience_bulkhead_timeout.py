"""Bulkheads (threads and tasks) and timeouts (async cancel, sync offload)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from scalekit import primitive_of
from scalekit.errors import (
    BulkheadFull,
    ConcurrencyLimitExceeded,
    ConfigurationError,
    DeadlineExceeded,
)
from scalekit.resilience import Bulkhead, bulkhead, deadline, remaining, timeout
from scalekit.testing import FakeClock

# -- bulkhead ---------------------------------------------------------------------


def test_bulkhead_rejects_beyond_slots_and_queue_threads() -> None:
    bh = Bulkhead("db", max_concurrent=2, max_queued=1)
    gate = threading.Event()
    entered = threading.Semaphore(0)
    done: list[str] = []

    @bh
    def work(tag: str) -> None:
        entered.release()
        gate.wait(5)
        done.append(tag)

    threads = [threading.Thread(target=work, args=(t,)) for t in ("a", "b")]
    for t in threads:
        t.start()
    entered.acquire()
    entered.acquire()  # both slots taken
    queued = threading.Thread(target=work, args=("c",))
    queued.start()
    while bh.stats().queued < 1:
        time.sleep(0.001)  # the third caller is queued
    with pytest.raises(BulkheadFull) as info:
        work("d")
    assert isinstance(info.value, ConcurrencyLimitExceeded)
    gate.set()
    for t in [*threads, queued]:
        t.join()
    assert sorted(done) == ["a", "b", "c"]
    s = bh.stats()
    assert (s.running, s.queued, s.admitted, s.rejected) == (0, 0, 3, 1)


def test_bulkhead_queue_timeout_threads() -> None:
    bh = Bulkhead(max_concurrent=1, max_queued=5, queue_timeout=0.01)
    with bh, pytest.raises(BulkheadFull):
        bh.acquire()
    assert bh.stats().rejected == 1
    with bh:
        pass  # slot free again


async def test_bulkhead_tasks_fifo_and_limits() -> None:
    bh = Bulkhead("llm", max_concurrent=2, max_queued=10)
    running = 0
    peak = 0
    order: list[int] = []

    @bh
    async def work(i: int) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        order.append(i)
        for _ in range(3):
            await asyncio.sleep(0)
        running -= 1

    await asyncio.gather(*(work(i) for i in range(12)))
    assert peak == 2 and order == list(range(12))
    with pytest.raises(BulkheadFull):
        await asyncio.gather(*(work(i) for i in range(13)))
    assert bh.stats().rejected >= 1


async def test_bulkhead_cancelled_waiter_leaves_the_queue() -> None:
    bh = Bulkhead(max_concurrent=1, max_queued=1)
    async with bh:
        waiter = asyncio.create_task(bh.aacquire())
        await asyncio.sleep(0)
        assert bh.stats().queued == 1
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert bh.stats().queued == 0
    assert bh.stats().running == 0


async def test_bulkhead_async_queue_timeout() -> None:
    bh = Bulkhead(max_concurrent=1, max_queued=1, queue_timeout=0.01)
    async with bh:
        with pytest.raises(BulkheadFull):
            await bh.aacquire()
    assert bh.stats().rejected == 1 and bh.stats().running == 0


async def test_bulkhead_shared_by_threads_and_tasks() -> None:
    bh = Bulkhead(max_concurrent=1, max_queued=1)
    bh.acquire()  # a thread holds the only slot
    waiter = asyncio.create_task(bh.aacquire())
    await asyncio.sleep(0)
    threading.Thread(target=bh.release).start()  # released from another thread
    await asyncio.wait_for(waiter, 5)
    assert bh.stats().running == 1
    bh.release()
    assert bh.stats().running == 0


def test_bulkhead_validation_and_decorator() -> None:
    with pytest.raises(ConfigurationError, match="max_concurrent"):
        Bulkhead(max_concurrent=0)
    with pytest.raises(ConfigurationError, match="max_queued"):
        Bulkhead(max_concurrent=1, max_queued=-1)
    f = bulkhead(max_concurrent=1)(lambda x: x + 1)
    assert f(1) == 2 and primitive_of(f, Bulkhead).stats().admitted == 1


# -- timeout -------------------------------------------------------------------------


async def test_async_timeout_cancels_the_attempt() -> None:
    cancelled = asyncio.Event()

    @timeout(0.01)
    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(DeadlineExceeded) as info:
        await slow()
    assert isinstance(info.value, TimeoutError) and cancelled.is_set()


async def test_async_timeout_passes_results_and_inner_timeout_errors() -> None:
    @timeout(5)
    async def fine() -> float | None:
        return remaining()

    left = await fine()
    assert left is not None and 4 < left <= 5

    @timeout(5)
    async def raises_own() -> None:
        raise TimeoutError("the callee's own")

    with pytest.raises(TimeoutError, match="callee's own") as info:
        await raises_own()
    assert not isinstance(info.value, DeadlineExceeded)


async def test_async_timeout_uses_the_enclosing_deadline() -> None:
    @timeout(10)
    async def slow() -> None:
        await asyncio.sleep(10)

    t0 = time.monotonic()
    with deadline(0.02), pytest.raises(DeadlineExceeded):
        await slow()
    assert time.monotonic() - t0 < 5


def test_sync_timeout_sets_the_deadline_and_refuses_late_starts() -> None:
    clock = FakeClock()

    @timeout(3, clock=clock)
    def read() -> float | None:
        return remaining()

    assert read() == 3.0
    with deadline(1, clock=clock):
        assert read() == 1.0
        clock.advance(1)
        with pytest.raises(DeadlineExceeded, match="before the call started"):
            read()


def test_sync_offload_stops_waiting() -> None:
    release = threading.Event()

    @timeout(0.02, offload=True)
    def stuck() -> str:
        release.wait(5)
        return "late"

    with pytest.raises(DeadlineExceeded):
        stuck()
    release.set()

    @timeout(5, offload=True)
    def fine(x: int) -> tuple[int, float | None]:
        return x, remaining()

    x, left = fine(4)
    assert x == 4 and left is not None and 0 < left <= 5  # the deadline reached the thread

    @timeout(5, offload=True)
    def fails() -> None:
        raise KeyError("k")

    with pytest.raises(KeyError):
        fails()


def test_timeout_validation() -> None:
    with pytest.raises(ConfigurationError, match="timeout"):
        timeout(-1)

    async def f() -> None:
        return None

    with pytest.raises(ConfigurationError, match="offload"):
        timeout(1, offload=True)(f)

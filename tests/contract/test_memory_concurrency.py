"""The memory stores under real threads and many tasks: never more than the limit."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator

import pytest

from scalekit import RateLimiter
from scalekit.ratelimit import ALGORITHMS, ConcurrencyLimiter


@pytest.fixture
def frequent_switches() -> Iterator[None]:
    """Switch threads every microsecond so read-modify-write races would show."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


@pytest.mark.usefixtures("frequent_switches")
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("policy", ["500/hour", "500/hour; 100000/day"])
def test_threads_never_exceed_the_limit(algorithm: str, policy: str) -> None:
    limiter = RateLimiter("memory://", policy, algorithm=algorithm)  # type: ignore[arg-type]
    allowed = [0] * 8
    start = threading.Barrier(8)

    def worker(i: int) -> None:
        start.wait()
        for _ in range(400):
            if limiter.hit("hot").allowed:
                allowed[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(allowed) == 500
    assert limiter.stats()["allowed"] == 500
    assert limiter.stats()["denied"] == 8 * 400 - 500


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_thousand_tasks_never_exceed_the_limit(algorithm: str) -> None:
    limiter = RateLimiter("memory://", "100/minute", algorithm=algorithm)  # type: ignore[arg-type]

    async def one() -> bool:
        await asyncio.sleep(0)
        return (await limiter.ahit("hot")).allowed

    got = await asyncio.gather(*(one() for _ in range(1000)))
    assert sum(got) == 100


@pytest.mark.usefixtures("frequent_switches")
def test_concurrency_leases_under_threads() -> None:
    cc = ConcurrencyLimiter("memory://", 3)
    inside = 0
    peak = 0
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker() -> None:
        nonlocal inside, peak
        start.wait()
        for _ in range(200):
            lease = cc.try_acquire("k")
            if lease is None:
                continue
            with lock:
                inside += 1
                peak = max(peak, inside)
            with lock:
                inside -= 1
            assert cc.release(lease)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 1 <= peak <= 3
    assert cc.in_flight("k") == 0

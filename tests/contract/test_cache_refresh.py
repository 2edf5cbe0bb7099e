"""Refresh-ahead (precomputed values) on memory, fakeredis and real Redis, on FakeClock."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from scalekit import MemoryBackend, RedisBackend
from scalekit.cache import Cache
from scalekit.cache._memory import MemoryCacheBackend
from scalekit.cache._redis import RedisCacheBackend
from scalekit.cache._refresh import RefreshAhead
from scalekit.errors import ConfigurationError
from scalekit.testing import FakeClock

WAIT = 10.0


@pytest.fixture
def cache(cache_backend: Any, clock: FakeClock) -> Iterator[Cache]:
    c = Cache(cache_backend, name="refresh", clock=clock)
    yield c
    assert c.drain(WAIT)


def test_the_job_keeps_the_value_fresh_and_readers_never_compute(
    cache: Cache, clock: FakeClock
) -> None:
    computed: list[float] = []

    def trending() -> list[int]:
        computed.append(clock.now())
        return [len(computed), 2, 3]

    job = RefreshAhead(cache, "trending", trending, ttl=300, refresh_ahead=30)
    assert job.run_pending() == pytest.approx(270)  # cold: computed now, next in 270 s
    assert cache.get("trending") == [1, 2, 3]
    start = clock.now()
    for _ in range(3 * 300 // 10):  # 15 minutes, a reader every 10 s, the job in between
        clock.advance(10)
        if job.run_pending() == 0:  # pragma: no cover - the job always reschedules itself
            pytest.fail("the job should have refreshed")
        value = cache.get("trending", "MISSING")
        assert value != "MISSING", f"a reader found nothing at +{clock.now() - start:.0f}s"
    # one computation per 270 s: at +270, +540, +810 after the first
    assert [round(t - start) for t in computed[1:]] == [270, 540, 810]
    assert cache.stats().misses == 0


def test_not_due_means_no_load(cache: Cache, clock: FakeClock) -> None:
    n = {"loads": 0}

    def load() -> int:
        n["loads"] += 1
        return n["loads"]

    job = RefreshAhead(cache, "k", load, ttl=60, refresh_ahead=10)
    job.run_pending()
    clock.advance(49)
    assert job.run_pending() == pytest.approx(1)
    assert n["loads"] == 1
    clock.advance(1)
    assert job.run_pending() == pytest.approx(50)
    assert n["loads"] == 2 and cache.get("k") == 2


def test_a_failing_loader_keeps_the_old_value_and_retries(
    cache: Cache, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    fail = {"on": False}

    def load() -> str:
        if fail["on"]:
            raise RuntimeError("warehouse down")
        return "v1"

    job = RefreshAhead(cache, "k", load, ttl=60, refresh_ahead=20, retry_after=5)
    job.run_pending()
    fail["on"] = True
    clock.advance(45)
    assert job.run_pending() == 5
    assert job.run_pending() == 5
    assert cache.get("k") == "v1"
    assert job.errors == 2
    assert (
        sum("warehouse down" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
        == 1
    )
    fail["on"] = False
    assert job.run_pending() == pytest.approx(40)
    assert job.loads == 2


def test_the_thread_loop_follows_the_schedule(cache: Cache, clock: FakeClock) -> None:
    times: list[float] = []
    five = threading.Event()

    def load() -> int:
        times.append(clock.now())
        if len(times) == 5:
            five.set()
        return len(times)

    job = RefreshAhead(cache, "k", load, ttl=100, refresh_ahead=25)
    job.start()
    assert five.wait(WAIT)
    assert job.stop(WAIT)
    gaps = [round(b - a) for a, b in itertools.pairwise(times)][:4]
    assert gaps == [75, 75, 75, 75]
    with pytest.raises(ConfigurationError):
        RefreshAhead(cache, "k", load, ttl=10, refresh_ahead=10)


async def test_the_asyncio_loop(cache: Cache, clock: FakeClock) -> None:
    times: list[float] = []

    async def load() -> int:
        times.append(clock.now())
        return len(times)

    job = RefreshAhead(cache, "k", load, ttl=10, refresh_ahead=4)
    task = asyncio.create_task(job.run())
    for _ in range(100_000):  # scheduling points only; FakeClock turns sleeps into jumps
        if len(times) >= 3:
            break
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [round(b - a) for a, b in itertools.pairwise(times)][:2] == [6, 6]
    assert await cache.aget("k") in (len(times), len(times) - 1)


def test_two_processes_refresh_once_per_period(
    backend: MemoryBackend | RedisBackend, clock: FakeClock
) -> None:
    """Two jobs of one key (two processes on Redis; two jobs of one process in memory)."""
    if isinstance(backend, MemoryBackend):
        a = b = Cache(MemoryCacheBackend(clock=clock), clock=clock)
    else:
        a = Cache(RedisCacheBackend(backend, clock=clock), name="a")
        b = Cache(RedisCacheBackend(backend, clock=clock), name="b")
    runs: list[str] = []
    started, release = threading.Event(), threading.Event()

    def slow_a() -> str:
        runs.append("a")
        started.set()
        assert release.wait(WAIT)
        return "a"

    def load_b() -> str:
        runs.append("b")
        return "b"

    ja = RefreshAhead(a, "k", slow_a, ttl=60, refresh_ahead=10)
    jb = RefreshAhead(b, "k", load_b, ttl=60, refresh_ahead=10)
    t = threading.Thread(target=ja.run_pending)
    t.start()
    assert started.wait(WAIT)
    if not isinstance(backend, MemoryBackend):
        jb.run_pending()  # a holds the lease: b does not load
    release.set()
    t.join(WAIT)
    assert jb.run_pending() == pytest.approx(50)  # a's value is fresh: nothing due
    assert runs == ["a"]
    clock.advance(50)
    jb.run_pending()
    ja.run_pending()
    assert runs == ["a", "b"]
    assert a.get("k") == "b"

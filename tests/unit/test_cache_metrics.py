"""The cache reports natively into the observability registry; stats() reads it."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import uuid

import pytest

from scalekit.cache import Cache, CacheOptions, cached
from scalekit.cache._core import CacheStats
from scalekit.observability import default_registry
from scalekit.testing import FakeClock


def _series(name: str, cache: str) -> float:
    """The cache's series summed over its namespaces."""
    total = 0.0
    for metric in default_registry.collect():
        if metric.name == name:
            for s in metric.samples:
                if s.labels["cache"] == cache:
                    total += s.value
    return total


def _name() -> str:
    return f"m-{uuid.uuid4().hex[:12]}"


def test_stats_are_read_from_the_exported_counters() -> None:
    name = _name()
    clock = FakeClock()
    c = Cache(name=name, clock=clock, options=CacheOptions(ttl=10, stale_while_revalidate=10))
    assert c.get_or_load("a", lambda: 1) == 1  # miss + load
    assert c.get_or_load("a", lambda: 2) == 1  # hit
    assert c.get("b") is None  # miss
    clock.advance(15)
    assert c.get("a") == 1  # stale served
    c.drain()
    with pytest.raises(ZeroDivisionError):
        c.get_or_load("z", lambda: 1 // 0)
    c.delete("a")
    c.invalidate_tags("t")
    c.invalidate_namespace("ns")
    c.clear()
    st = c.stats()
    assert dataclasses.is_dataclass(st) and isinstance(st, CacheStats)
    with pytest.raises(dataclasses.FrozenInstanceError):
        st.hits = 0  # type: ignore[misc]
    assert (st.hits, st.misses, st.stale_served) == (1, 3, 1)
    assert (st.loads, st.load_errors, st.invalidations) == (2, 1, 4)
    for field, metric in [
        ("hits", "scalekit_cache_hits_total"),
        ("misses", "scalekit_cache_misses_total"),
        ("stale_served", "scalekit_cache_stale_served_total"),
        ("loads", "scalekit_cache_loads_total"),
        ("load_errors", "scalekit_cache_load_errors_total"),
        ("invalidations", "scalekit_cache_invalidations_total"),
    ]:
        assert _series(metric, name) == getattr(st, field), field


def test_cached_hit_path_counts_on_the_cache() -> None:
    name = _name()
    c = Cache(name=name)

    @cached(ttl=60, cache=c)
    def f(x: int) -> int:
        return x * 2

    @cached(ttl=60, cache=c)
    async def g(x: int) -> int:
        return x * 3

    for _ in range(5):
        assert f(2) == 4
    for _ in range(3):
        assert asyncio.run(g(2)) == 6
    st = c.stats()
    assert (st.hits, st.misses, st.loads) == (6, 2, 2)
    assert _series("scalekit_cache_hits_total", name) == 6


def test_two_caches_named_alike_count_apart_and_export_the_sum() -> None:
    name = _name()
    a, b = Cache(name=name), Cache(name=name)
    a.get_or_load("k", lambda: 1)
    a.get_or_load("k", lambda: 1)
    b.get_or_load("k", lambda: 1)
    assert (a.stats().hits, b.stats().hits) == (1, 0)
    assert _series("scalekit_cache_misses_total", name) == 2
    assert _series("scalekit_cache_hits_total", name) == 1


def test_threads_waiting_for_one_load_are_counted_as_coalesced() -> None:
    c = Cache(name=_name())
    started, release = threading.Event(), threading.Event()
    calls = 0

    def load() -> int:
        nonlocal calls
        calls += 1
        started.set()
        release.wait(5)
        return 7

    results: list[int] = []
    leader = threading.Thread(target=lambda: results.append(c.get_or_load("k", load)))
    leader.start()
    assert started.wait(5)
    waiters = [
        threading.Thread(target=lambda: results.append(c.get_or_load("k", load))) for _ in range(3)
    ]
    for t in waiters:
        t.start()
    # the waiters are counted when they join the flight, before the load ends
    while c.stats().coalesced < 3:
        threading.Event().wait(0.001)
    release.set()
    for t in [leader, *waiters]:
        t.join(5)
    assert results == [7] * 4 and calls == 1
    st = c.stats()
    assert (st.coalesced, st.loads, st.misses) == (3, 1, 4)


async def test_tasks_waiting_for_one_load_are_counted_as_coalesced() -> None:
    c = Cache(name=_name())
    gate = asyncio.Event()

    async def load() -> int:
        await gate.wait()
        return 5

    tasks = [asyncio.create_task(c.aget_or_load("k", load)) for _ in range(4)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*tasks) == [5] * 4
    st = c.stats()
    assert (st.coalesced, st.loads) == (3, 1)


def test_label_is_the_cache_name_never_a_key() -> None:
    name = _name()
    c = Cache(name=name)
    c.get_or_load("user:secret-key", lambda: 1)
    for metric in default_registry.collect():
        if metric.name.startswith("scalekit_cache_"):
            for s in metric.samples:
                assert "user:secret-key" not in s.labels.values()
                assert set(s.labels) == {"cache", "namespace"}

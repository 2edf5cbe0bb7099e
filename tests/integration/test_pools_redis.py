"""redis-py clients from scalekit.pools on a real Redis: bounds, exhaustion, lifetime."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
import uuid

import pytest
import redis

from scalekit.errors import PoolExhausted
from scalekit.pools import (
    PgPool,
    PoolRegistry,
    PoolSettings,
    PoolStats,
    async_redis_client,
    async_redis_health_check,
    pool_stats,
    redis_client,
    redis_health_check,
)
from scalekit.testing import FakeClock

pytestmark = pytest.mark.redis


def _named_connections(url: str, name: str) -> int:
    admin = redis.Redis.from_url(url)
    try:
        return sum(1 for c in admin.client_list() if c.get("name") == name)
    finally:
        admin.close()


def test_sync_client_is_bounded_and_raises_pool_exhausted(redis_url: str) -> None:
    name = f"sk-{uuid.uuid4().hex[:8]}"
    client = redis_client(
        PoolSettings(url=redis_url, max_size=4, acquire_timeout=30), client_name=name
    )
    seen: list[int] = []
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            client.blpop(["sk-nothing"], timeout=0.01)

    threads = [threading.Thread(target=work) for _ in range(12)]
    for t in threads:
        t.start()
    try:
        for _ in range(30):
            seen.append(_named_connections(redis_url, name))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert 2 <= max(seen) <= 4  # used concurrently, never beyond the bound
    client.close()
    client = redis_client(PoolSettings(url=redis_url, max_size=4, acquire_timeout=0.2))
    pool = client.connection_pool
    held = [pool.get_connection() for _ in range(4)]
    start = time.monotonic()
    with pytest.raises(PoolExhausted) as info:
        client.ping()
    assert 0.2 <= time.monotonic() - start < 1.5
    assert info.value.size == 4 and info.value.waiters == 1
    stats = pool_stats(client)
    assert stats.in_use == 4 and stats.timeouts == 1 and stats.size == 4 and stats.idle == 0
    for connection in held:
        pool.release(connection)
    assert client.ping() is True
    assert pool_stats(client).in_use == 0
    client.close()


async def test_async_client_200_tasks_bounded_server_side(redis_url: str) -> None:
    name = f"sk-{uuid.uuid4().hex[:8]}"
    client = async_redis_client(PoolSettings(url=redis_url, max_size=5), client_name=name)
    seen: list[int] = []
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            seen.append(await asyncio.to_thread(_named_connections, redis_url, name))

    async def work(i: int) -> int:
        await client.blpop(["sk-nothing"], timeout=0.01)
        return int(await client.incr(f"sk-count-{name}"))

    watcher = asyncio.create_task(watch())
    counts = await asyncio.gather(*(work(i) for i in range(200)))
    done.set()
    await watcher
    assert sorted(counts) == list(range(1, 201))
    assert max(seen) <= 5 and max(seen) > 1
    stats = client.connection_pool.stats()
    assert stats.acquired == 400 and stats.in_use == 0 and stats.size <= 5
    report = await async_redis_health_check(client)
    assert report.ok and report.stats.kind == "redis"
    await client.aclose()


async def test_async_client_pool_exhausted_names_waiters(redis_url: str) -> None:
    client = async_redis_client(PoolSettings(url=redis_url, max_size=2, acquire_timeout=0.2))
    pool = client.connection_pool
    held = [await pool.get_connection() for _ in range(2)]
    results = await asyncio.gather(*(client.ping() for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, PoolExhausted) for r in results)
    assert max(r.waiters for r in results if isinstance(r, PoolExhausted)) == 3
    assert pool.stats().timeouts == 3
    for connection in held:
        await pool.release(connection)
    assert await client.ping() is True
    await client.aclose()


def test_redis_max_lifetime_reconnects(redis_url: str) -> None:
    clock = FakeClock()
    settings = PoolSettings(url=redis_url, max_size=1, max_lifetime=30, lifetime_jitter=0)
    client = redis_client(settings, clock=clock)
    first = client.client_id()
    clock.advance(29)
    assert client.client_id() == first
    clock.advance(1)
    assert client.client_id() != first
    assert pool_stats(client).recycled == 1
    client.close()


def test_metric_names_are_the_same_for_postgres_and_redis(redis_url: str) -> None:
    client = redis_client(redis_url)
    report = redis_health_check(client)
    assert report.ok
    pg = PgPool("postgresql://u@127.0.0.1:1/db?max_size=3").stats()
    assert isinstance(pg, PoolStats) and isinstance(report.stats, PoolStats)
    assert pg.max_size == 3 and report.stats.max_size == 10
    names = {f.name for f in dataclasses.fields(PoolStats)}
    assert set(pg.as_dict()) == set(report.stats.as_dict()) == names
    client.close()


def test_unreachable_redis_health_check_reports_instead_of_raising() -> None:
    from servers import free_port

    client = redis_client(f"redis://127.0.0.1:{free_port()}/0?connect_timeout=0.2")
    report = redis_health_check(client)
    assert not report.ok and "Connection" in (report.error or "")
    client.close()


async def test_registry_redis_clients(redis_url: str) -> None:
    registry = PoolRegistry()
    async with registry:
        sync = registry.redis(redis_url)
        assert registry.redis(redis_url) is sync
        assert registry.redis(redis_url, max_size=2) is not sync
        aclient = registry.async_redis(redis_url)
        assert registry.async_redis(redis_url) is aclient
        assert await aclient.ping() is True and sync.ping() is True
        assert {s.kind for s in registry.stats()} == {"redis"}
    assert registry.redis(redis_url) is not sync  # closed and forgotten on exit
    registry.redis(redis_url).close()


def test_redis_pre_ping_after_idle(redis_url: str) -> None:
    admin = redis.Redis.from_url(redis_url)

    def pings() -> int:
        stats = admin.info("commandstats").get("cmdstat_ping", {})
        return int(stats.get("calls", 0))

    client = redis_client(PoolSettings(url=redis_url, max_size=1, pre_ping_after=0.2))
    client.set("sk-ping", 1)
    before = pings()
    client.get("sk-ping")  # used just now: no ping
    assert pings() == before
    time.sleep(0.3)  # the idleness under test, not a wait for an event
    client.get("sk-ping")
    assert pings() == before + 1  # idle past pre_ping_after: PING first
    client.close()
    admin.close()

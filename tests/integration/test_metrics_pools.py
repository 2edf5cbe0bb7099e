"""Pools report into the metrics registry natively, on the real servers of the suite,
and log ``pool.exhausted`` once per burst of timeouts (issue 14)."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest

from scalekit.errors import PoolExhausted
from scalekit.observability import default_registry
from scalekit.pools import PgPool, PoolSettings, async_redis_client, redis_client


def series(name: str) -> dict[tuple[str, ...], float]:
    for m in default_registry.collect():
        if m.name == name:
            return {tuple(s.labels[n] for n in m.labelnames): s.value for s in m.samples}
    return {}


def histogram_count(name: str, labels: tuple[str, ...]) -> int:
    for m in default_registry.collect():
        if m.name == name:
            for s in m.samples:
                if tuple(s.labels[n] for n in m.labelnames) == labels:
                    return s.count
    return 0


def exhausted_events(caplog: pytest.LogCaptureFixture, pool: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if getattr(r, "event", None) == "pool.exhausted" and getattr(r, "pool", None) == pool
    ]


async def test_postgres_pool_metrics_and_one_exhausted_event(
    postgres_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="scalekit.events")
    name = f"pg-{uuid.uuid4().hex[:8]}"
    key = (name, "postgres")
    settings = PoolSettings(url=postgres_dsn, max_size=2, acquire_timeout=0.2, name=name)
    async with PgPool(settings) as pool:
        held = [await pool.acquire() for _ in range(2)]
        assert series("scalekit_pool_in_use_connections")[key] == 2
        assert series("scalekit_pool_open_connections")[key] == 2
        assert series("scalekit_pool_max_connections")[key] == 2

        async def attempt() -> None:
            with pytest.raises(PoolExhausted):
                async with pool.acquire():
                    pass

        await asyncio.gather(*(attempt() for _ in range(3)))
        assert series("scalekit_pool_timeouts_total")[key] == 3
        assert pool.stats().timeouts == 3
        # three timeouts in a burst: one event, with the pool's figures
        (event,) = exhausted_events(caplog, name)
        assert event.kind == "postgres" and event.size == 2  # type: ignore[attr-defined]
        for con in held:
            await pool.release(con)
        async with pool.acquire() as con:
            assert await con.fetchval("SELECT 1") == 1
            assert series("scalekit_pool_in_use_connections")[key] == 1
        stats = pool.stats()
    assert series("scalekit_pool_acquired_total")[key] == stats.acquired == 3
    # every acquire's wait went into the histogram, the timed-out ones too
    assert histogram_count("scalekit_pool_acquire_seconds", key) == 3 + 3


def test_sync_redis_pool_metrics(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="scalekit.events")
    name = f"redis-{uuid.uuid4().hex[:8]}"
    key = (name, "redis")
    client = redis_client(PoolSettings(url=redis_url, max_size=2, acquire_timeout=0.1, name=name))
    try:
        assert client.ping() is True
        pool = client.connection_pool
        held = [pool.get_connection() for _ in range(2)]
        assert series("scalekit_pool_in_use_connections")[key] == 2
        for _ in range(2):
            with pytest.raises(PoolExhausted):
                client.ping()
        assert series("scalekit_pool_timeouts_total")[key] == 2
        assert len(exhausted_events(caplog, name)) == 1
        for connection in held:
            pool.release(connection)
        assert series("scalekit_pool_in_use_connections")[key] == 0
        assert series("scalekit_pool_open_connections")[key] == 2
        assert series("scalekit_pool_acquired_total")[key] == pool.stats().acquired
    finally:
        client.close()


async def test_async_redis_pool_metrics(redis_url: str) -> None:
    name = f"aredis-{uuid.uuid4().hex[:8]}"
    key = (name, "redis")
    client = async_redis_client(
        PoolSettings(url=redis_url, max_size=3, acquire_timeout=0.2, name=name)
    )
    try:
        await asyncio.gather(*(client.ping() for _ in range(10)))
        stats = client.connection_pool.stats()
        assert series("scalekit_pool_acquired_total")[key] == stats.acquired >= 10
        assert series("scalekit_pool_open_connections")[key] == stats.size <= 3
        assert histogram_count("scalekit_pool_acquire_seconds", key) >= 10
    finally:
        await client.aclose()

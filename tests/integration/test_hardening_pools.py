"""PgPool's bound always holds: double releases, cancelled waits and releases.

On the real PostgreSQL of the suite. Every wait is wrapped in ``asyncio.timeout`` so a
regression fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from scalekit.errors import ConfigurationError, PoolExhausted
from scalekit.pools import PgPool, PoolSettings

pytestmark = pytest.mark.postgres

GUARD = 5.0  # a hanging acquire fails the test after this many seconds


async def _exhausted_within(pool: PgPool, timeout: float) -> float:
    start = time.monotonic()
    async with asyncio.timeout(GUARD):
        with pytest.raises(PoolExhausted):
            await pool.acquire(timeout=timeout)
    return time.monotonic() - start


async def test_a_double_release_is_refused_and_the_bound_holds(postgres_dsn: str) -> None:
    async with PgPool(PoolSettings(url=postgres_dsn, max_size=1)) as pool:
        con = await pool.acquire()
        await pool.release(con)
        with pytest.raises(ConfigurationError, match="released twice"):
            await pool.release(con)
        assert pool.stats().in_use == 0
        held = await pool.acquire()
        assert pool.stats().in_use == 1
        # before the fix in_use was 0 here, the fast path skipped its timer: hang
        assert 0.2 <= await _exhausted_within(pool, 0.2) < GUARD
        await pool.release(held)
        assert pool.stats().in_use == 0


async def test_a_double_release_from_two_tasks_gives_back_one_slot(postgres_dsn: str) -> None:
    async with PgPool(PoolSettings(url=postgres_dsn, max_size=2)) as pool:
        con = await pool.acquire()
        other = await pool.acquire()
        results = await asyncio.gather(pool.release(con), pool.release(con), return_exceptions=True)
        assert sorted(type(r).__name__ for r in results) == ["ConfigurationError", "NoneType"]
        assert pool.stats().in_use == 1
        again = await pool.acquire()
        assert pool.stats().in_use == 2
        await _exhausted_within(pool, 0.2)
        for c in (other, again):
            await pool.release(c)
        assert pool.stats().in_use == 0


async def test_async_with_after_an_explicit_release_is_refused(postgres_dsn: str) -> None:
    async with PgPool(PoolSettings(url=postgres_dsn, max_size=1)) as pool:
        with pytest.raises(ConfigurationError):
            async with pool.acquire() as con:
                await pool.release(con)
        assert pool.stats().in_use == 0
        async with asyncio.timeout(GUARD), pool.acquire() as con:
            assert await con.fetchval("SELECT 1") == 1


async def test_a_cancelled_waiting_acquire_leaves_the_pool_consistent(postgres_dsn: str) -> None:
    async with PgPool(PoolSettings(url=postgres_dsn, max_size=1)) as pool:
        held = await pool.acquire()

        async def wait() -> None:
            await pool.acquire(timeout=30)

        waiter = asyncio.create_task(wait())
        # the pool has no event to await for "a caller is queued": yield until it is
        while pool.stats().waiters == 0:  # noqa: ASYNC110
            await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        stats = pool.stats()
        assert (stats.in_use, stats.waiters) == (1, 0)
        await _exhausted_within(pool, 0.1)
        await pool.release(held)
        async with asyncio.timeout(GUARD), pool.acquire(timeout=1) as con:
            assert await con.fetchval("SELECT 2") == 2
        assert pool.stats().in_use == 0


async def test_a_cancelled_release_still_gives_the_slot_back(postgres_dsn: str) -> None:
    async with PgPool(PoolSettings(url=postgres_dsn, max_size=1)) as pool:
        con = await pool.acquire()
        releasing = asyncio.create_task(pool.release(con))
        await asyncio.sleep(0)  # the release has started its reset round trip
        releasing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await releasing
        with pytest.raises(ConfigurationError):
            await pool.release(con)  # it is gone from the caller's hands either way
        # the slot comes back once asyncpg has reset the connection, and an acquire
        # meanwhile waits for it under its timeout
        async with asyncio.timeout(GUARD), pool.acquire(timeout=2) as again:
            assert await again.fetchval("SELECT 3") == 3
        assert pool.stats().in_use == 0


async def test_many_waiters_each_honour_their_own_timeout(postgres_dsn: str) -> None:
    async with PgPool(PoolSettings(url=postgres_dsn, max_size=2)) as pool:
        held = [await pool.acquire() for _ in range(2)]
        elapsed = await asyncio.gather(*(_exhausted_within(pool, t) for t in (0.1, 0.2, 0.3)))
        for e, t in zip(elapsed, (0.1, 0.2, 0.3), strict=True):
            assert t <= e < GUARD
        for c in held:
            await pool.release(c)
        assert pool.stats().timeouts == 3 and pool.stats().in_use == 0


async def test_a_release_after_close_is_harmless(postgres_dsn: str) -> None:
    pool = PgPool(PoolSettings(url=postgres_dsn, max_size=2))
    con = await pool.acquire()
    async with asyncio.timeout(GUARD):
        await pool.close(timeout=0.1)  # the held connection is terminated
    await pool.release(con)  # before: AttributeError on the dropped asyncpg pool
    assert pool.stats().in_use == 0
    with pytest.raises(ConfigurationError):
        await pool.release(con)


async def test_a_storm_of_tasks_with_double_releases_keeps_the_bound(postgres_dsn: str) -> None:
    """60 tasks on 4 connections, every third one releasing twice from two tasks:
    in_use stays within [0, max_size] and every acquire ends in its timeout."""
    async with PgPool(PoolSettings(url=postgres_dsn, max_size=4)) as pool:
        seen: list[int] = []

        async def work(i: int) -> str:
            try:
                con = await pool.acquire(timeout=3)
            except PoolExhausted:
                return "exhausted"
            seen.append(pool.stats().in_use)
            await con.fetchval("SELECT pg_sleep(0.002)")
            if i % 3 == 0:
                results = await asyncio.gather(
                    pool.release(con), pool.release(con), return_exceptions=True
                )
                assert sum(isinstance(r, ConfigurationError) for r in results) == 1
            else:
                await pool.release(con)
            return "ok"

        async with asyncio.timeout(30):
            outcomes = await asyncio.gather(*(work(i) for i in range(60)))
        assert outcomes.count("ok") == 60
        assert min(seen) >= 1 and max(seen) <= 4
        stats = pool.stats()
        assert stats.in_use == 0 and stats.waiters == 0 and stats.size <= 4
        assert 0.05 <= await _exhausted_within_full(pool) < GUARD


async def _exhausted_within_full(pool: PgPool) -> float:
    held = [await pool.acquire() for _ in range(pool.settings.max_size)]
    try:
        return await _exhausted_within(pool, 0.05)
    finally:
        for c in held:
            await pool.release(c)

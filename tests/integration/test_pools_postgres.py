"""PgPool on a real PostgreSQL (and through a real PgBouncer in transaction mode)."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
import uuid
from typing import Any

import asyncpg
import pytest

from scalekit.errors import BackendError, ConfigurationError, PoolExhausted
from scalekit.pools import PgPool, PoolRegistry, PoolSettings, create_pg_pool, default_registry
from scalekit.testing import FakeClock

pytestmark = pytest.mark.postgres


def _app() -> str:
    return f"sk-test-{uuid.uuid4().hex[:12]}"


async def _server_connections(monitor: Any, app: str) -> int:
    count: int = await monitor.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app
    )
    return count


async def test_200_tasks_never_exceed_max_size_server_side(postgres_dsn: str) -> None:
    app = _app()
    monitor = await asyncpg.connect(postgres_dsn)
    seen: list[int] = []
    async with PgPool(PoolSettings(url=postgres_dsn, max_size=10, application_name=app)) as pool:
        done = asyncio.Event()

        async def watch() -> None:
            while not done.is_set():
                seen.append(await _server_connections(monitor, app))

        async def work(i: int) -> int:
            async with pool.acquire() as con:
                value: int = await con.fetchval("SELECT $1::int FROM pg_sleep(0.005)", i)
                return value

        watcher = asyncio.create_task(watch())
        results = await asyncio.gather(*(work(i) for i in range(200)))
        done.set()
        await watcher
        stats = pool.stats()
    await monitor.close()
    assert results == list(range(200))
    assert max(seen) <= 10, seen
    assert max(seen) == 10  # the pool really was saturated, so the bound was tested
    assert stats.acquired == 200 and stats.in_use == 0 and stats.waiters == 0
    assert stats.size <= 10 and stats.timeouts == 0
    assert stats.wait_seconds_max > 0


async def test_acquire_raises_pool_exhausted_within_its_timeout(postgres_dsn: str) -> None:
    async with PgPool(PoolSettings(url=postgres_dsn, max_size=3, acquire_timeout=0.3)) as pool:
        held = [await pool.acquire() for _ in range(3)]
        assert pool.stats().in_use == 3

        async def attempt() -> tuple[PoolExhausted, float]:
            start = time.monotonic()
            with pytest.raises(PoolExhausted) as info:
                async with pool.acquire():
                    pass
            return info.value, time.monotonic() - start

        outcomes = await asyncio.gather(attempt(), attempt())
        for error, elapsed in outcomes:
            assert 0.3 <= elapsed < 1.5
            assert error.size == 3 and error.timeout == pytest.approx(0.3)
            assert isinstance(error, TimeoutError)
            assert "all 3 connection(s) in use" in str(error)
        assert max(error.waiters for error, _ in outcomes) == 2
        stats = pool.stats()
        assert stats.timeouts == 2 and stats.waiters == 0 and stats.in_use == 3
        # a per-call timeout overrides the default
        start = time.monotonic()
        with pytest.raises(PoolExhausted):
            await pool.acquire(timeout=0.05)
        assert time.monotonic() - start < 0.3
        await pool.release(held.pop())
        async with pool.acquire() as con:  # a freed connection is handed out again
            assert await con.fetchval("SELECT 1") == 1
        for con in held:
            await pool.release(con)
        assert pool.stats().in_use == 0


async def test_invalidated_cached_statement_is_retried_outside_transactions(
    postgres_dsn: str,
) -> None:
    table = f"sk_ddl_{uuid.uuid4().hex[:8]}"
    async with PgPool(PoolSettings(url=postgres_dsn, max_size=1)) as pool:
        await pool.execute(f"CREATE TABLE {table} (a int)")
        try:
            await pool.execute(f"INSERT INTO {table} VALUES (1)")
            query = f"SELECT * FROM {table} WHERE a = $1"
            assert [tuple(r) for r in await pool.fetch(query, 1)] == [(1,)]
            await pool.execute(f"ALTER TABLE {table} ADD COLUMN b int DEFAULT 7")
            # the cached plan's result type changed: re-prepared and run again
            assert [tuple(r) for r in await pool.fetch(query, 1)] == [(1, 7)]
            await pool.execute(f"ALTER TABLE {table} ADD COLUMN c int DEFAULT 8")
            async with pool.acquire() as con:
                with pytest.raises(asyncpg.exceptions.InvalidCachedStatementError):
                    async with con.transaction():  # inside a transaction: never retried
                        await con.fetch(query, 1)
        finally:
            await pool.execute(f"DROP TABLE {table}")


async def test_max_lifetime_replaces_old_connections(postgres_dsn: str) -> None:
    clock = FakeClock()
    settings = PoolSettings(url=postgres_dsn, max_size=1, max_lifetime=60, lifetime_jitter=0)
    async with PgPool(settings, clock=clock) as pool:
        async with pool.acquire() as con:
            first = con.get_server_pid()
        clock.advance(59)
        async with pool.acquire() as con:
            assert con.get_server_pid() == first
        clock.advance(1)
        async with pool.acquire() as con:
            second = con.get_server_pid()
            assert await con.fetchval("SELECT 1") == 1
        assert second != first
        assert pool.stats().recycled == 1


async def test_lifetime_jitter_spreads_expiries(postgres_dsn: str) -> None:
    clock = FakeClock()
    settings = PoolSettings(
        url=postgres_dsn, min_size=4, max_size=4, max_lifetime=100, lifetime_jitter=0.5
    )
    async with PgPool(settings, clock=clock) as pool:
        held = [await pool.acquire() for _ in range(4)]
        expiries = {con._sk_expires - clock.now() for con in held}
        for con in held:
            await pool.release(con)
    assert len(expiries) == 4  # not all replaced at once
    assert all(50 <= e <= 100 for e in expiries)


async def test_pre_ping_runs_only_after_idle(postgres_dsn: str) -> None:
    clock = FakeClock()
    monitor = await asyncpg.connect(postgres_dsn)
    settings = PoolSettings(url=postgres_dsn, max_size=1, pre_ping_after=30)
    try:
        async with PgPool(settings, clock=clock) as pool:
            async with pool.acquire() as con:
                pid = con.get_server_pid()
                await con.execute("SELECT 42")

            async def last_query() -> str:
                q: str = await monitor.fetchval(
                    "SELECT query FROM pg_stat_activity WHERE pid = $1", pid
                )
                return q

            clock.advance(10)
            async with pool.acquire():
                assert await last_query() != "SELECT 1"  # recently used: no ping
            clock.advance(31)
            async with pool.acquire() as con:
                assert await last_query() == "SELECT 1"  # idle 31 s: pinged first
            # a connection killed while idle is replaced, not handed out dead
            # with a timeout, pg_terminate_backend returns once the backend has exited
            assert await monitor.fetchval("SELECT pg_terminate_backend($1, 10000)", pid)
            clock.advance(31)
            async with pool.acquire() as con:
                assert await con.fetchval("SELECT 1") == 1
                assert con.get_server_pid() != pid
    finally:
        await monitor.close()


async def test_health_check_and_unreachable_server(postgres_dsn: str) -> None:
    pool = await create_pg_pool(PoolSettings(url=postgres_dsn, max_size=2))
    report = await pool.health_check()
    assert report.ok and report.error is None and report.latency >= 0
    assert report.stats.kind == "postgres"
    await pool.close()
    from servers import free_port

    dead = PgPool(
        PoolSettings(
            url=f"postgresql://postgres@127.0.0.1:{free_port()}/postgres",
            connect_timeout=1,
            acquire_timeout=2,
        )
    )
    report = await dead.health_check()
    assert not report.ok and report.error is not None
    with pytest.raises(BackendError) as info:
        await dead.open()
    assert isinstance(info.value.__cause__, OSError)
    # min_size=0 opens nothing up front: the first acquire fails the same way
    lazy = await create_pg_pool(dead.settings.with_options(min_size=0))
    with pytest.raises(BackendError) as info:
        async with lazy.acquire():
            pass
    assert isinstance(info.value.__cause__, OSError)
    assert lazy.stats().in_use == 0 and lazy.stats().waiters == 0
    await lazy.close()


async def test_startup_capacity_check_reads_the_server(postgres_dsn: str) -> None:
    async with PgPool(PoolSettings(url=postgres_dsn, max_size=10)) as pool:
        max_connections = int(await pool.fetchval("SHOW max_connections"))
        reserved = int(await pool.fetchval("SHOW superuser_reserved_connections"))
        fits = (max_connections - reserved) // 10
        report = await pool.check_capacity(processes=fits)
        assert report.ok and report.max_connections == max_connections
        assert report.server_reserved >= reserved
        with pytest.warns(RuntimeWarning, match="does NOT fit"):
            report = await pool.check_capacity(processes=fits + 1)
        assert not report.ok and report.demand == (fits + 1) * 10
        with pytest.raises(ConfigurationError, match=f"max_connections {max_connections}"):
            await pool.check_capacity(processes=1, reserve=max_connections, on_excess="raise")
        with pytest.raises(ConfigurationError, match="processes"):
            await pool.check_capacity(processes=0)


async def test_registry_one_pool_per_settings_and_loop(postgres_dsn: str) -> None:
    registry = PoolRegistry()
    async with registry:
        pools = await asyncio.gather(*(registry.postgres(postgres_dsn) for _ in range(20)))
        assert len({id(p) for p in pools}) == 1  # racing first uses share one creation
        assert await registry.postgres(postgres_dsn) is pools[0]
        other = await registry.postgres(postgres_dsn, max_size=3)
        assert other is not pools[0] and other.settings.max_size == 3
        assert len(registry.stats()) == 2
        assert await pools[0].fetchval("SELECT 1") == 1
    assert pools[0].raw is None  # closed on exit
    async with registry:
        again = await registry.postgres(postgres_dsn)
        assert again is not pools[0]


async def test_registry_survives_a_cancelled_creator(postgres_dsn: str) -> None:
    registry = PoolRegistry()
    async with registry:
        creator = asyncio.create_task(registry.postgres(postgres_dsn))
        follower = asyncio.create_task(registry.postgres(postgres_dsn))
        await asyncio.sleep(0)  # the creator has started opening; the follower waits on it
        creator.cancel()
        pool = await follower  # not cancelled itself: it creates the pool instead
        assert await pool.fetchval("SELECT 1") == 1
        with pytest.raises(asyncio.CancelledError):
            await creator
        assert await registry.postgres(postgres_dsn) is pool


def test_registry_keys_by_event_loop(postgres_dsn: str) -> None:
    registry = PoolRegistry()

    async def get() -> PgPool:
        pool = await registry.postgres(postgres_dsn)
        assert await pool.fetchval("SELECT 1") == 1
        await registry.aclose()
        return pool

    assert asyncio.run(get()) is not asyncio.run(get())


async def test_registry_forgets_a_failed_creation() -> None:
    from servers import free_port

    registry = PoolRegistry()
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres?connect_timeout=1"
    for _ in range(2):  # the failure is raised each time, not cached
        with pytest.raises(BackendError):
            await registry.postgres(url)
    assert registry.stats() == []


_DIRECT: list[PgPool] = []  # a pool opened by the parent, reached by the forked child


def _child(url: str, queue: Any) -> None:
    async def main() -> tuple[int, int, int, int]:
        inherited = len(default_registry.stats())
        pool = await default_registry.postgres(url)
        value: int = await pool.fetchval("SELECT 41 + 1")
        await default_registry.aclose()
        # the parent's own PgPool object reopens in this process on first use
        direct = _DIRECT[0]
        direct_value: int = await direct.fetchval("SELECT 7")
        acquired = direct.stats().acquired
        await direct.close()
        return inherited, value, direct_value, acquired

    queue.put(asyncio.run(main()))


def test_registry_is_safe_after_fork(postgres_dsn: str) -> None:
    loop = asyncio.new_event_loop()
    direct: PgPool | None = None
    try:
        parent = loop.run_until_complete(default_registry.postgres(postgres_dsn))
        pid_before = loop.run_until_complete(parent.fetchval("SELECT pg_backend_pid()"))
        direct = loop.run_until_complete(create_pg_pool(PoolSettings(url=postgres_dsn)))
        direct_pid = loop.run_until_complete(direct.fetchval("SELECT pg_backend_pid()"))
        _DIRECT.append(direct)
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_child, args=(postgres_dsn, queue))
        child.start()
        inherited, value, direct_value, acquired = queue.get(timeout=60)
        child.join(60)
        assert child.exitcode == 0
        assert inherited == 0  # the child starts with an empty registry
        assert value == 42  # and opens its own pool
        assert direct_value == 7 and acquired == 1  # fresh pool and counters in the child
        # the parent's pools and their server sessions survived the child (which
        # even closed its copy of ``direct``)
        assert loop.run_until_complete(parent.fetchval("SELECT pg_backend_pid()")) == pid_before
        assert loop.run_until_complete(direct.fetchval("SELECT pg_backend_pid()")) == direct_pid
        assert loop.run_until_complete(default_registry.postgres(postgres_dsn)) is parent
    finally:
        _DIRECT.clear()
        if direct is not None:
            loop.run_until_complete(direct.close())
        loop.run_until_complete(default_registry.aclose())
        loop.close()


# --------------------------------------------------------------------------- PgBouncer


async def test_transaction_pooler_mode_makes_prepared_statements_work(pgbouncer_dsn: str) -> None:
    """50 client connections over PgBouncer's 5 server connections (pool_mode=transaction)."""
    settings = PoolSettings(url=pgbouncer_dsn, max_size=50, pooler="pgbouncer-transaction")
    async with PgPool(settings) as pool:

        async def work(i: int) -> tuple[int, str]:
            async with pool.acquire() as con:
                n: int = await con.fetchval("SELECT $1::int * 2", i)
                async with con.transaction():
                    await con.execute("SET LOCAL application_name = 'sk-tx'")
                    row = await con.fetchrow("SELECT $1::text AS t, pg_sleep(0.001)", str(i))
                return n, row["t"]

        for _ in range(3):
            results = await asyncio.gather(*(work(i) for i in range(200)))
            assert results == [(2 * i, str(i)) for i in range(200)]
        assert pool.stats().acquired == 600
        assert await pool.fetchval("SELECT current_setting('server_version_num')::int") > 0


async def test_statement_cache_breaks_under_transaction_pooling(pgbouncer_dsn: str) -> None:
    """The control: the same load with ``pooler="direct"`` (statement cache on) fails."""
    async with PgPool(PoolSettings(url=pgbouncer_dsn, max_size=50, pooler="direct")) as pool:

        async def work(i: int) -> int:
            async with pool.acquire() as con:
                n: int = await con.fetchval(f"SELECT $1::int + {i % 7}", i)
                return n

        results = []
        for _ in range(3):
            results += await asyncio.gather(*(work(i) for i in range(200)), return_exceptions=True)
    errors = [r for r in results if isinstance(r, Exception)]
    assert errors, "expected prepared-statement errors without the pooler mode"
    assert all("prepared statement" in str(e) for e in errors), errors[:3]


async def test_session_pooler_mode_keeps_the_statement_cache(
    postgres_dsn: str, tmp_path: Any
) -> None:
    """PgBouncer in pool_mode=session: one server connection per client connection, so
    asyncpg's named prepared statements are safe and stay cached."""
    from servers import PgBouncer

    with PgBouncer(postgres_dsn, tmp_path, pool_mode="session", pool_size=4) as bouncer:
        settings = PoolSettings(url=bouncer.dsn, max_size=4, pooler="pgbouncer-session")
        async with PgPool(settings) as pool:

            async def work(i: int) -> int:
                async with pool.acquire() as con:
                    n: int = await con.fetchval("SELECT $1::int + 1", i)
                    return n

            assert await asyncio.gather(*(work(i) for i in range(100))) == list(range(1, 101))
            async with pool.acquire() as con:
                named = await con.fetchval(
                    "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE '__asyncpg%'"
                )
            assert named >= 1  # the cache is on: statements were prepared by name

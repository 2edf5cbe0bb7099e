"""scalekit.pools acquire/release overhead next to the raw drivers, in one process.

    .venv/bin/python benchmarks/bench_pools.py            # full run (~1 min)
    .venv/bin/python benchmarks/bench_pools.py --quick    # ~15 s, smaller samples

What is measured (see benchmarks/README.md for the method), one event loop, one
task, a warm pool of 10 connections (no connect inside the timing):

1. ``pg-acquire``  ``async with pool.acquire(): pass`` on a raw ``asyncpg.Pool``
   (without a timeout, and with ``timeout=5``) and on a :class:`scalekit.pools.PgPool`
   (its finite wait, metrics, lifetime check); the same plus a ``SELECT 1`` round
   trip, for scale. asyncpg's release runs a reset query (a server round trip), so
   these rows are dominated by I/O.
2. ``pg-wrapper``  the same acquire/release on a stand-in pool that does no I/O: the
   CPU cost of PgPool's own bookkeeping, without the server round trip asyncpg's
   release makes (its ``RESET ALL``/``UNLISTEN`` reset query) blurring it.
3. ``redis``       ``await client.ping()`` on redis-py's asyncio client with a raw
   ``BlockingConnectionPool`` and on :func:`scalekit.pools.async_redis_client`;
   the same for the sync clients.

PostgreSQL and Redis are started locally (``tests/servers.py``) unless
``SCALEKIT_BENCH_POSTGRES_DSN`` / ``SCALEKIT_BENCH_REDIS_URL`` point at servers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _harness import Case, Result, Table, machine_info, print_machine, run_cases, write_json

DISTS = ("asyncpg", "redis")
LOOP = asyncio.new_event_loop()


@contextlib.contextmanager
def servers() -> Iterator[tuple[str, str]]:
    from servers import RedisServer, start_postgres

    with contextlib.ExitStack() as stack:
        dsn = os.environ.get("SCALEKIT_BENCH_POSTGRES_DSN")
        if not dsn:
            dsn = stack.enter_context(start_postgres()).dsn
        url = os.environ.get("SCALEKIT_BENCH_REDIS_URL")
        if not url:
            url = stack.enter_context(RedisServer()).url
        yield dsn, url


def pg_cases(dsn: str) -> tuple[list[Case], list[Callable[[], Any]]]:
    import asyncpg

    from scalekit.pools import PgPool, PoolSettings

    closers: list[Callable[[], Any]] = []

    def raw_pool() -> Any:
        async def create() -> Any:  # inside the loop: the pool binds to the running loop
            return await asyncpg.create_pool(dsn, min_size=10, max_size=10)

        pool = LOOP.run_until_complete(create())
        closers.append(lambda: LOOP.run_until_complete(pool.close()))
        return pool

    def sk_pool() -> Any:
        settings = PoolSettings(url=dsn, min_size=10, max_size=10)
        pool = LOOP.run_until_complete(PgPool(settings).open())
        closers.append(lambda: LOOP.run_until_complete(pool.close()))
        return pool

    def acquire_only(make: Callable[[], Any]) -> Callable[[], Callable[[int], Any]]:
        def setup() -> Callable[[int], Any]:
            pool = make()

            async def many(n: int) -> None:
                for _ in range(n):
                    async with pool.acquire():
                        pass

            return lambda n: LOOP.run_until_complete(many(n))

        return setup

    def acquire_timeout(make: Callable[[], Any]) -> Callable[[], Callable[[int], Any]]:
        def setup() -> Callable[[int], Any]:
            pool = make()

            async def many(n: int) -> None:
                for _ in range(n):
                    async with pool.acquire(timeout=5.0):
                        pass

            return lambda n: LOOP.run_until_complete(many(n))

        return setup

    def with_query(make: Callable[[], Any]) -> Callable[[], Callable[[int], Any]]:
        def setup() -> Callable[[int], Any]:
            pool = make()

            async def many(n: int) -> None:
                for _ in range(n):
                    async with pool.acquire() as con:
                        await con.fetchval("SELECT 1")

            return lambda n: LOOP.run_until_complete(many(n))

        return setup

    cases = [
        Case("asyncpg Pool: acquire+release (no timeout)", acquire_only(raw_pool)),
        Case("asyncpg Pool: acquire(timeout=5)+release", acquire_timeout(raw_pool)),
        Case("scalekit PgPool: acquire+release (5 s limit)", acquire_only(sk_pool), peer=False),
        Case("asyncpg Pool: acquire+SELECT 1+release", with_query(raw_pool)),
        Case("scalekit PgPool: acquire+SELECT 1+release", with_query(sk_pool), peer=False),
    ]
    return cases, closers


class _StubConnection:
    _sk_expires = float("inf")
    _sk_last_used = 0.0


class _StubPool:
    """Stands in for ``asyncpg.Pool``: acquire/release that never leave the process."""

    def __init__(self) -> None:
        self.con = _StubConnection()

    async def acquire(self, *, timeout: float | None = None) -> Any:
        return self.con

    async def release(self, con: Any, *, timeout: float | None = None) -> None:
        return None

    def get_size(self) -> int:
        return 10


def wrapper_cases() -> list[Case]:
    from scalekit.pools import PgPool, PoolSettings

    def bare() -> Callable[[int], Any]:
        pool = _StubPool()

        async def many(n: int) -> None:
            for _ in range(n):
                con = await pool.acquire(timeout=5.0)
                await pool.release(con)

        return lambda n: LOOP.run_until_complete(many(n))

    def wrapped() -> Callable[[int], Any]:
        pool = PgPool(PoolSettings(url="postgresql://stub/db", max_size=10))
        pool._pool = _StubPool()  # the wrapper's own work only

        async def many(n: int) -> None:
            for _ in range(n):
                async with pool.acquire():
                    pass

        return lambda n: LOOP.run_until_complete(many(n))

    return [
        Case("stand-in pool: acquire + release", bare),
        Case("scalekit PgPool over the stand-in", wrapped, peer=False),
    ]


def redis_cases(url: str) -> tuple[list[Case], list[Callable[[], Any]]]:
    import redis
    import redis.asyncio

    from scalekit.pools import PoolSettings, async_redis_client, redis_client

    closers: list[Callable[[], Any]] = []

    def async_case(make: Callable[[], Any]) -> Callable[[], Callable[[int], Any]]:
        def setup() -> Callable[[int], Any]:
            client = make()
            closers.append(lambda: LOOP.run_until_complete(client.aclose()))

            async def many(n: int) -> None:
                for _ in range(n):
                    await client.ping()

            return lambda n: LOOP.run_until_complete(many(n))

        return setup

    def sync_case(make: Callable[[], Any]) -> Callable[[], Callable[[int], Any]]:
        def setup() -> Callable[[int], Any]:
            client = make()
            closers.append(client.close)
            ping = client.ping

            def many(n: int) -> None:
                for _ in range(n):
                    ping()

            return many

        return setup

    settings = PoolSettings(url=url, max_size=10)
    cases = [
        Case(
            "redis.asyncio + BlockingConnectionPool: PING",
            async_case(
                lambda: redis.asyncio.Redis(
                    connection_pool=redis.asyncio.BlockingConnectionPool.from_url(
                        url, max_connections=10, timeout=5
                    )
                )
            ),
        ),
        Case(
            "scalekit async_redis_client: PING",
            async_case(lambda: async_redis_client(settings)),
            peer=False,
        ),
        Case(
            "redis.Redis + BlockingConnectionPool: PING",
            sync_case(
                lambda: redis.Redis(
                    connection_pool=redis.BlockingConnectionPool.from_url(
                        url, max_connections=10, timeout=5
                    )
                )
            ),
        ),
        Case("scalekit redis_client: PING", sync_case(lambda: redis_client(settings)), peer=False),
    ]
    return cases, closers


def overhead(results: list[Result], pairs: list[tuple[int, int]]) -> str:
    lines = [
        "| scalekit row | raw driver row | overhead CPU/op | overhead wall/op |",
        "|---|---|--:|--:|",
    ]
    for sk, raw in pairs:
        a, b = results[sk], results[raw]
        if a.error or b.error:
            continue
        lines.append(
            f"| {a.name} | {b.name} | {(a.cpu_ns - b.cpu_ns) / 1000:+.2f} µs "
            f"| {(a.wall_ns - b.wall_ns) / 1000:+.2f} µs |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller samples (~15 s)")
    ap.add_argument("--json", metavar="PATH", help="also write every number as JSON")
    ap.add_argument(
        "--sections",
        default="pg-acquire,pg-wrapper,redis",
        help="subset of pg-acquire,pg-wrapper,redis",
    )
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--ops", type=int)
    args = ap.parse_args()
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    repeats = args.repeats or (3 if args.quick else 7)
    ops = args.ops or (2_000 if args.quick else 8_000)

    started = time.perf_counter()
    info = machine_info(DISTS)
    payload: dict[str, Any] = {"machine": info, "tables": {}, "quick": args.quick}
    print("# scalekit.pools acquire/release overhead\n")
    print_machine(info)
    closers: list[Callable[[], Any]] = []
    try:
        with servers() as (dsn, url):
            if "pg-acquire" in sections:
                print("[pg-acquire]", file=sys.stderr, flush=True)
                cases, more = pg_cases(dsn)
                closers += more
                results = run_cases(cases, ops=ops, repeats=repeats)
                table = Table(
                    "PostgreSQL: acquire/release, raw asyncpg vs PgPool (10 warm connections)",
                    results,
                )
                print(table.render() + "\n")
                print(overhead(results, [(2, 0), (2, 1), (4, 3)]) + "\n", flush=True)
                payload["tables"]["pg-acquire"] = table.as_json()
            if "pg-wrapper" in sections:
                print("[pg-wrapper]", file=sys.stderr, flush=True)
                results = run_cases(wrapper_cases(), ops=ops * 10, repeats=repeats)
                table = Table("PgPool's own bookkeeping per acquire/release (no I/O)", results)
                print(table.render() + "\n")
                print(overhead(results, [(1, 0)]) + "\n", flush=True)
                payload["tables"]["pg-wrapper"] = table.as_json()
            if "redis" in sections:
                print("[redis]", file=sys.stderr, flush=True)
                cases, more = redis_cases(url)
                closers += more
                results = run_cases(cases, ops=ops, repeats=repeats)
                table = Table("Redis: PING through the pool, raw redis-py vs scalekit", results)
                print(table.render() + "\n")
                print(overhead(results, [(1, 0), (3, 2)]) + "\n", flush=True)
                payload["tables"]["redis"] = table.as_json()
            for close in closers:
                close()
    finally:
        LOOP.close()
    print(f"_Total time: {time.perf_counter() - started:.0f} s._")
    if args.json:
        write_json(args.json, payload)


if __name__ == "__main__":
    main()

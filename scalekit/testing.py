"""Helpers for testing code that uses scalekit.

``FakeClock`` is a clock whose time moves only when told to, and whose ``sleep``
and ``asleep`` advance it instead of waiting, so tests of rate limits, windows and
timeouts run instantly and deterministically::

    from scalekit.testing import FakeClock

    clock = FakeClock()
    limiter = RateLimiter("memory://", "3/minute", clock=clock)
    ...
    clock.advance(60)
"""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

from scalekit._clock import Clock

__all__ = ["Clock", "FakeClock"]


class FakeClock:
    """A manually driven clock. Thread-safe; ``sleep``/``asleep`` advance it."""

    __slots__ = ("_lock", "_now", "sleeps")

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        # Unix-time magnitude by default: the float rounding of times near 1.7e9
        # (~2.4e-7 s) is what Redis TIME gives the scripts, so tests see it too.
        self._now = float(start)
        self._lock = threading.Lock()
        #: every duration passed to sleep()/asleep(), in order
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float | timedelta) -> float:
        """Move time forward; returns the new time."""
        if isinstance(seconds, timedelta):
            seconds = seconds.total_seconds()
        if seconds < 0:
            raise ValueError(f"a clock cannot go backwards (advance({seconds}))")
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, when: float) -> None:
        """Jump to an absolute time, which must not be earlier than now."""
        with self._lock:
            if when < self._now:
                raise ValueError(f"a clock cannot go backwards ({when} < {self._now})")
            self._now = float(when)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(max(0.0, seconds))

    async def asleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)  # still a scheduling point, as a real sleep is

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now!r})"


# -- change-feed correctness harness (scalekit.sync) ---------------------------------
# Appended: the harness users run against their own PostgreSQL to see that a change
# feed loses nothing under concurrent writers, and that a timestamp cursor does.

from dataclasses import dataclass as _dataclass  # noqa: E402
from typing import Any  # noqa: E402

__all__ += ["SyncCheck", "check_change_feed"]


@_dataclass(frozen=True, slots=True)
class SyncCheck:
    """What :func:`check_change_feed` found: the copy against the table at the end.

    ``missing``: rows in the table the copy lacks; ``stale``: rows whose copy is an
    older version; ``undeleted``: rows deleted from the table still in the copy.
    """

    method: str
    seed: int
    commits: int
    passes: int
    rows: int
    missing: int
    stale: int
    undeleted: int

    @property
    def ok(self) -> bool:
        return self.missing == self.stale == self.undeleted == 0


async def check_change_feed(
    dsn: str,
    *,
    schema: str = "public",
    writers: int = 12,
    duration: float = 2.0,
    max_hold: float = 0.3,
    seed: int = 0,
    method: str = "xid8",
    reader_dsn: str | None = None,
    secret: str | None = None,
) -> SyncCheck:
    """Run ``writers`` concurrent writers against a scratch table while a reader syncs
    a copy continuously, then catch up once after they stop and compare.

    Each writer commits transactions of one to three inserts, updates and deletes,
    holding each open for 0..``max_hold`` seconds (``updated_at`` is ``now()``, the
    transaction's start, as in most applications). ``method="xid8"`` reads with
    :class:`scalekit.sync.ChangeFeed`; ``method="naive"`` with the usual
    ``WHERE updated_at > $last ORDER BY updated_at`` cursor, which loses rows that
    commit out of order (the control that proves the harness can fail). The scratch
    table is created in ``schema`` and dropped at the end; ``reader_dsn`` lets the
    reader go through a pooler (PgBouncer in transaction mode) while the writers
    connect directly. Needs the ``postgres`` extra.
    """
    import random

    from scalekit.pagination._sql import quote_ident
    from scalekit.pools._postgres import _import_asyncpg
    from scalekit.sync import ChangeFeed, Replica, install_change_tracking

    if method not in ("xid8", "naive"):
        raise ValueError(f"method must be 'xid8' or 'naive', got {method!r}")
    asyncpg = _import_asyncpg()
    rng = random.Random(seed)
    table_name = f"_sk_harness_{rng.getrandbits(48):012x}"
    table = f"{quote_ident(schema, 'schema')}.{quote_ident(table_name)}"
    admin = await asyncpg.connect(dsn)
    reader: Any = None
    conns: list[Any] = []
    try:
        await admin.execute(
            f"CREATE TABLE {table} (id bigint PRIMARY KEY, val bigint NOT NULL, "
            "updated_at timestamptz NOT NULL DEFAULT now())"
        )
        await admin.execute(
            f"INSERT INTO {table} (id, val, updated_at) "
            "SELECT i, 0, now() - (201 - i) * interval '1 ms' FROM generate_series(1, 200) i"
        )
        if method == "xid8":
            await install_change_tracking(admin, table_name, key="id", schema=schema)
        conns = [await asyncpg.connect(dsn) for _ in range(writers)]
        reader = await asyncpg.connect(reader_dsn or dsn, statement_cache_size=0)
        stop = asyncio.Event()
        next_id = [201]
        commits = [0]

        async def write(con: Any, wrng: random.Random) -> None:
            while not stop.is_set():
                try:
                    async with con.transaction():
                        for _ in range(wrng.randint(1, 3)):
                            op = wrng.random()
                            if op < 0.4:
                                next_id[0] += 1
                                await con.execute(
                                    f"INSERT INTO {table} (id, val) VALUES ($1, 0)", next_id[0]
                                )
                            elif op < 0.85:
                                await con.execute(
                                    f"UPDATE {table} SET val = val + 1, updated_at = now() "
                                    "WHERE id = $1",
                                    wrng.randint(1, next_id[0]),
                                )
                            else:
                                await con.execute(
                                    f"DELETE FROM {table} WHERE id = $1",
                                    wrng.randint(1, next_id[0]),
                                )
                        await asyncio.sleep(wrng.uniform(0.0, max_hold))
                    commits[0] += 1
                except asyncpg.exceptions.DeadlockDetectedError:
                    continue

        copy: dict[Any, Any] = {}
        passes = 0
        if method == "xid8":
            feed = ChangeFeed(
                table_name, key="id", schema=schema, secret=secret or "harness-" + "0" * 24
            )
            replica = Replica(feed, copy)

            async def catch_up() -> None:
                await replica.sync(reader, limit=50)
        else:
            last: list[Any] = [None]

            async def catch_up() -> None:
                while True:
                    rows = await reader.fetch(
                        f"SELECT id, val, updated_at FROM {table} "
                        "WHERE $1::timestamptz IS NULL OR updated_at > $1 "
                        "ORDER BY updated_at LIMIT 50",
                        last[0],
                    )
                    for r in rows:
                        copy[r["id"]] = dict(r)
                    if rows:
                        last[0] = rows[-1]["updated_at"]
                    if len(rows) < 50:
                        return

        async def read() -> None:
            nonlocal passes
            while not stop.is_set():
                await catch_up()
                passes += 1
                await asyncio.sleep(0.005)

        tasks = [asyncio.create_task(write(c, random.Random(rng.getrandbits(64)))) for c in conns]
        reading = asyncio.create_task(read())
        await asyncio.sleep(duration)
        stop.set()
        await asyncio.gather(*tasks, reading)
        # every writer has committed: wait until the watermark passes all of them
        # (another session's open transaction could hold it back), then catch up once
        target = await admin.fetchval("SELECT pg_snapshot_xmax(pg_current_snapshot())::text")
        for _ in range(2000):
            if await admin.fetchval(
                "SELECT pg_snapshot_xmin(pg_current_snapshot()) >= $1::text::xid8", target
            ):
                break
            await asyncio.sleep(0.005)
        await catch_up()
        passes += 1
        truth = {r["id"]: r["val"] for r in await admin.fetch(f"SELECT id, val FROM {table}")}
        return SyncCheck(
            method=method,
            seed=seed,
            commits=commits[0],
            passes=passes,
            rows=len(truth),
            missing=sum(1 for k in truth if k not in copy),
            stale=sum(1 for k, v in truth.items() if k in copy and copy[k]["val"] != v),
            undeleted=sum(1 for k in copy if k not in truth),
        )
    finally:
        for c in [*conns, reader]:
            if c is not None:
                await c.close()
        await admin.execute(f"DROP TABLE IF EXISTS {table}")
        await admin.close()

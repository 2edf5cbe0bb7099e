"""scalekit.maintenance on a real PostgreSQL (and through a real PgBouncer).

Every test makes its own schema (unique name) and drops it. What is asserted is the
final content of the tables, read back from the server, against what the job was
asked to do, while other transactions write and update concurrently.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, Literal

import asyncpg
import pytest

from scalekit import ConfigurationError, MaintenanceRefused
from scalekit.maintenance import Archival, Partitions, Retention, Runner
from scalekit.pools import PgPool, PoolSettings

pytestmark = pytest.mark.postgres

N_ROWS = 200_000


@pytest.fixture
async def pool(postgres_dsn: str) -> AsyncIterator[PgPool]:
    async with PgPool(PoolSettings(url=postgres_dsn, max_size=6)) as p:
        yield p


@pytest.fixture
async def schema(pool: PgPool) -> AsyncIterator[str]:
    s = f"sk_mt_{uuid.uuid4().hex[:10]}"
    await pool.execute(f"CREATE SCHEMA {s}")
    try:
        yield s
    finally:
        await pool.execute(f"DROP SCHEMA {s} CASCADE")


async def _wait_for(pred: Any, what: str, timeout: float = 20.0) -> None:
    """Poll the server for a state another task is driving towards (bounded)."""
    deadline = time.monotonic() + timeout
    while not await pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class ParkingClock:
    """Real time, but the pause after batch ``park_after`` waits until cancelled."""

    def __init__(self, park_after: int) -> None:
        self.park_after = park_after
        self.pauses = 0
        self.parked = asyncio.Event()

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:  # pragma: no cover - sync path unused
        raise AssertionError("no blocking sleep in async jobs")

    async def asleep(self, seconds: float) -> None:
        self.pauses += 1
        if self.pauses >= self.park_after:
            self.parked.set()
            await asyncio.Event().wait()


# -- retention -------------------------------------------------------------------
async def _events(pool: PgPool, schema: str) -> tuple[str, Any]:
    t = f"{schema}.events"
    await pool.execute(f"""
        CREATE TABLE {t} (id bigint PRIMARY KEY, created_at timestamptz NOT NULL,
                          note text NOT NULL DEFAULT '');
        CREATE INDEX ON {t} (created_at, id);
        INSERT INTO {t} (id, created_at)
            SELECT i, now() - (i % 20) * interval '1 day' - (i % 997) * interval '1 second'
            FROM generate_series(1, {N_ROWS}) i;
        ANALYZE {t};
    """)
    cutoff = await pool.fetchval("SELECT now() - interval '10 days'")
    return t, cutoff


async def _ids(pool: PgPool, sql: str, *args: Any) -> set[int]:
    return {r[0] for r in await pool.fetch(sql, *args)}


class Writer:
    """Inserts new rows and moves old rows to "now" while a job runs; remembers
    every change that committed."""

    def __init__(self, pool: PgPool, table: str, old_ids: list[int]) -> None:
        self.pool, self.table = pool, table
        self.inserted: set[int] = set()
        self.touched: set[int] = set()
        self.old = old_ids
        self.stop = asyncio.Event()
        self.next_id = 10_000_000

    async def run(self) -> None:
        rnd = random.Random(7)
        while not self.stop.is_set():
            ids = list(range(self.next_id, self.next_id + 20))
            self.next_id += 20
            await self.pool.execute(
                f"INSERT INTO {self.table} (id, created_at) SELECT unnest($1::bigint[]), now()",
                ids,
            )
            self.inserted.update(ids)
            victim = rnd.choice(self.old)
            status = await self.pool.execute(
                f"UPDATE {self.table} SET created_at = now(), note = 'touched' WHERE id = $1",
                victim,
            )
            if status == "UPDATE 1":
                self.touched.add(victim)
            await asyncio.sleep(0)


async def _check_retention(
    pool: PgPool, t: str, cutoff: Any, survivors: set[int], writer: Writer | None
) -> None:
    assert await pool.fetchval(f"SELECT count(*) FROM {t} WHERE created_at < $1", cutoff) == 0
    final = await _ids(pool, f"SELECT id FROM {t}")
    extra = (writer.inserted | writer.touched) if writer else set()
    assert final == survivors | extra


async def test_retention_deletes_exactly_the_expired_rows_with_a_writer_running(
    pool: PgPool, schema: str
) -> None:
    t, cutoff = await _events(pool, schema)
    survivors = await _ids(pool, f"SELECT id FROM {t} WHERE created_at >= $1", cutoff)
    expired = await _ids(pool, f"SELECT id FROM {t} WHERE created_at < $1", cutoff)
    assert len(survivors) > 50_000 and len(expired) > 50_000
    job = Retention(t, "created_at", cutoff=cutoff, batch_size=5000, pause=0)
    assert await job.count(pool) == len(expired)  # the dry run deletes nothing
    assert await pool.fetchval(f"SELECT count(*) FROM {t}") == N_ROWS

    writer = Writer(pool, t, sorted(expired))
    task = asyncio.create_task(writer.run())
    try:
        result = await job(pool)
    finally:
        writer.stop.set()
        await task
    assert result.finished and result.batches >= len(expired) // 5000
    assert result.rows == len(expired - writer.touched)
    assert writer.touched  # the writer did move expired rows out of reach
    await _check_retention(pool, t, cutoff, survivors, writer)
    # the checkpoint is gone once the run finished
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM scalekit_maintenance_checkpoint WHERE job = $1", job.job_name
        )
        == 0
    )


async def test_retention_cancelled_mid_run_resumes_from_its_checkpoint(
    pool: PgPool, schema: str, postgres_dsn: str
) -> None:
    t, cutoff = await _events(pool, schema)
    survivors = await _ids(pool, f"SELECT id FROM {t} WHERE created_at >= $1", cutoff)
    n_expired = N_ROWS - len(survivors)
    clock = ParkingClock(park_after=4)
    job = Retention(t, "created_at", keep=timedelta(days=10), batch_size=5000, clock=clock)
    # the interrupted run's sessions print dates their own way (DMY, another zone)
    odd = {"DateStyle": "SQL, DMY", "TimeZone": "Asia/Kolkata"}
    async with asyncpg.create_pool(
        postgres_dsn, min_size=1, max_size=2, server_settings=odd
    ) as first:
        task = asyncio.create_task(job(first))
        await clock.parked.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    deleted = N_ROWS - await pool.fetchval(f"SELECT count(*) FROM {t}")
    assert deleted == 4 * 5000  # four batches committed, nothing half-done
    saved = await pool.fetchrow(
        "SELECT cutoff, position FROM scalekit_maintenance_checkpoint WHERE job = $1",
        job.job_name,
    )
    assert saved is not None and saved["position"] is not None
    # later, from a session with the default settings: a new run (new now())
    # continues at the saved position with the interrupted run's cutoff
    resumed = await Retention(t, "created_at", keep=timedelta(days=10), pause=0)(pool)
    assert resumed.cutoff == saved["cutoff"]
    assert resumed.rows == n_expired - deleted
    await _check_retention(pool, t, saved["cutoff"], survivors, None)


async def test_retention_whose_connection_is_terminated_resumes(
    pool: PgPool, schema: str, postgres_dsn: str
) -> None:
    t, cutoff = await _events(pool, schema)
    survivors = await _ids(pool, f"SELECT id FROM {t} WHERE created_at >= $1", cutoff)
    # hold a lock on an expired row far along the walk, so a batch waits on it
    blocker = await pool.acquire()
    tx = blocker.transaction()
    await tx.start()
    held = await blocker.fetchval(
        f"SELECT id FROM {t} WHERE created_at < $1 ORDER BY created_at DESC, id DESC LIMIT 1",
        cutoff,
    )
    await blocker.execute(f"SELECT 1 FROM {t} WHERE id = $1 FOR UPDATE", held)
    job = Retention(t, "created_at", cutoff=cutoff, batch_size=5000, pause=0, lock_timeout=60)
    task = asyncio.create_task(job(pool))

    async def waiting() -> bool:
        n: int = await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE '%doomed%' AND pid <> pg_backend_pid()"
        )
        return n > 0

    await _wait_for(waiting, "the batch to wait on the held row")
    killed = await pool.fetchval(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE wait_event_type = 'Lock' AND query LIKE '%doomed%' AND pid <> pg_backend_pid()"
    )
    assert killed == 1
    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
        await task
    await tx.rollback()
    await pool.release(blocker)
    left = await pool.fetchval(f"SELECT count(*) FROM {t} WHERE created_at < $1", cutoff)
    assert 0 < left < N_ROWS - len(survivors)  # some batches had committed
    result = await job(pool)
    assert result.rows == left
    await _check_retention(pool, t, cutoff, survivors, None)


# -- archival --------------------------------------------------------------------
async def _messages(pool: PgPool, schema: str, archive: bool = True) -> str:
    t = f"{schema}.messages"
    await pool.execute(f"""
        CREATE TABLE {t} (id bigint PRIMARY KEY, conversation_id int NOT NULL,
                          created_at timestamptz NOT NULL, body text NOT NULL,
                          version int NOT NULL DEFAULT 0, archived boolean NOT NULL DEFAULT false);
        CREATE INDEX ON {t} (conversation_id, created_at DESC, id DESC);
        INSERT INTO {t} (id, conversation_id, created_at, body)
            SELECT row_number() OVER (), c, now() - m * interval '1 minute', 'm' || m
            FROM generate_series(1, 300) c, generate_series(1, (c * 7919) % 260) m;
    """)
    if archive:
        await pool.execute(f"CREATE TABLE {schema}.messages_archive (LIKE {t})")
    return t


async def test_archival_keeps_the_newest_n_and_moves_each_row_exactly_once(
    pool: PgPool, schema: str
) -> None:
    t = await _messages(pool, schema)
    a = f"{schema}.messages_archive"
    rows = await pool.fetch(f"SELECT id, conversation_id, created_at FROM {t}")
    by_conv: dict[int, list[tuple[Any, int]]] = {}
    for r in rows:
        by_conv.setdefault(r["conversation_id"], []).append((r["created_at"], r["id"]))
    newest = {c: {i for _, i in sorted(v, reverse=True)[:100]} for c, v in by_conv.items()}
    all_ids = {r["id"] for r in rows}

    committed: dict[int, int] = {}  # id -> version an update committed
    stop = asyncio.Event()

    async def updater() -> None:
        rnd = random.Random(3)
        ids = sorted(all_ids)
        while not stop.is_set():
            i = rnd.choice(ids)
            v = await pool.fetchval(
                f"UPDATE {t} SET version = version + 1, body = body || '+' WHERE id = $1 "
                "RETURNING version",
                i,
            )
            if v is not None:
                committed[i] = v
            await asyncio.sleep(0)

    job = Archival(
        t,
        parent="conversation_id",
        order_by="created_at",
        keep=100,
        archive_table=a,
        parents_per_batch=17,
        pause=0,
    )
    task = asyncio.create_task(updater())
    try:
        result = await job(pool)
    finally:
        stop.set()
        await task
    assert committed
    hot = {r["id"]: r for r in await pool.fetch(f"SELECT id, conversation_id, version FROM {t}")}
    arch = await pool.fetch(f"SELECT id, version FROM {a}")
    arch_ids = [r["id"] for r in arch]
    assert len(arch_ids) == len(set(arch_ids))  # nothing copied twice
    assert set(hot) | set(arch_ids) == all_ids and not set(hot) & set(arch_ids)  # none lost
    assert result.rows == len(arch_ids)
    for c, keep in newest.items():
        assert {i for i, r in hot.items() if r["conversation_id"] == c} == keep
    # an update that committed is in the row's final version, hot or archived
    final_version = {i: r["version"] for i, r in hot.items()} | {
        r["id"]: r["version"] for r in arch
    }
    assert all(final_version[i] >= v for i, v in committed.items())

    # a second run has nothing left to do; restore brings one conversation back
    assert (await job(pool)).rows == 0
    big = max(by_conv, key=lambda c: len(by_conv[c]))
    assert await job.restore(pool, big) == len(by_conv[big]) - 100
    assert await pool.fetchval(f"SELECT count(*) FROM {t} WHERE conversation_id = $1", big) == len(
        by_conv[big]
    )
    assert await pool.fetchval(f"SELECT count(*) FROM {a} WHERE conversation_id = $1", big) == 0


async def test_soft_archive_flags_rows_and_only_idle_parents(pool: PgPool, schema: str) -> None:
    t = await _messages(pool, schema, archive=False)
    # conversation 1 is active (a message now); the others are idle for a day
    await pool.execute(
        f"UPDATE {t} SET created_at = created_at - interval '1 day' WHERE conversation_id <> 1"
    )
    await pool.execute(
        f"INSERT INTO {t} (id, conversation_id, created_at, body) VALUES (10000000, 1, now(), 'x')"
    )
    counts = {
        r[0]: r[1]
        for r in await pool.fetch(f"SELECT conversation_id, count(*) FROM {t} GROUP BY 1")
    }
    job = Archival(
        t,
        parent="conversation_id",
        order_by="created_at",
        keep=10,
        soft_column="archived",
        idle_for=timedelta(hours=1),
        pause=0,
    )
    result = await job(pool)
    flagged = dict(
        await pool.fetch(f"SELECT conversation_id, count(*) FROM {t} WHERE archived GROUP BY 1")
    )
    expected = {c: n - 10 for c, n in counts.items() if c != 1 and n > 10}
    assert flagged == expected and result.rows == sum(expected.values())
    assert await job.restore(pool, 2) == expected[2]
    assert (
        await pool.fetchval(f"SELECT count(*) FROM {t} WHERE archived AND conversation_id = 2") == 0
    )


# -- bad input is refused before anything is touched ----------------------------
async def test_refusals_say_why_and_their_fix_works(pool: PgPool, schema: str) -> None:
    t = f"{schema}.logs"
    await pool.execute(f"""
        CREATE TABLE {t} (id bigint PRIMARY KEY, at timestamptz NOT NULL);
        INSERT INTO {t} SELECT i, now() - interval '30 days' FROM generate_series(1, 100) i;
    """)
    job = Retention(t, "at", keep=timedelta(days=7), pause=0)
    with pytest.raises(MaintenanceRefused, match="no btree index on") as info:
        await job(pool)
    assert await pool.fetchval(f"SELECT count(*) FROM {t}") == 100
    await pool.execute(info.value.fix)  # the DDL the message gave
    assert (await job(pool)).rows == 100

    future = await pool.fetchval("SELECT now() + interval '1 hour'")
    with pytest.raises(MaintenanceRefused, match="in the future"):
        await Retention(t, "at", cutoff=future)(pool)
    with pytest.raises(MaintenanceRefused, match="no column 'nope'"):
        await Retention(t, "nope", keep=1)(pool)

    m = await _messages(pool, schema, archive=False)
    await pool.execute(f"CREATE TABLE {schema}.bad_archive (id bigint, body varchar(3))")
    arch = Archival(
        m,
        parent="conversation_id",
        order_by="created_at",
        keep=5,
        archive_table=f"{schema}.bad_archive",
    )
    before = await pool.fetchval(f"SELECT count(*) FROM {m}")
    with pytest.raises(MaintenanceRefused, match="does not match") as info:
        await arch(pool)
    assert "'conversation_id' is missing" in str(info.value)
    assert "'body' is character varying(3), not text" in str(info.value)
    assert await pool.fetchval(f"SELECT count(*) FROM {m}") == before
    await pool.execute(info.value.fix)
    assert (await arch(pool)).rows > 0

    missing = Archival(
        m,
        parent="conversation_id",
        order_by="created_at",
        keep=5,
        archive_table=f"{schema}.nowhere",
    )
    with pytest.raises(MaintenanceRefused, match="does not exist") as info:
        await missing(pool)
    assert info.value.fix.startswith(f"CREATE TABLE {schema}.nowhere (LIKE")


async def test_hostile_names_are_quoted_not_executed(pool: PgPool, schema: str) -> None:
    col = 'at"; DROP TABLE x; --'
    t = f'{schema}."we""ird table"'
    await pool.execute(f"""
        CREATE TABLE {t} (id int PRIMARY KEY, "{col.replace('"', '""')}" timestamptz NOT NULL);
        CREATE INDEX ON {t} ("{col.replace('"', '""')}", id);
        INSERT INTO {t} VALUES (1, now() - interval '2 days'), (2, now());
    """)
    result = await Retention(t, col, keep=timedelta(days=1), pause=0)(pool)
    assert result.rows == 1
    assert await pool.fetchval(f"SELECT array_agg(id) FROM {t}") == [2]
    with pytest.raises(MaintenanceRefused, match="not a valid table name"):
        await Retention(f"{schema}.x; DROP SCHEMA {schema}", "at", keep=1)(pool)
    with pytest.raises(MaintenanceRefused, match="does not exist"):
        await Retention(f'{schema}."x; DROP SCHEMA {schema}"', "at", keep=1)(pool)
    assert await pool.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname = $1", schema)


# -- the runner ------------------------------------------------------------------
async def test_two_runners_never_run_the_same_job_at_once(postgres_dsn: str) -> None:
    entered = asyncio.Event()
    gate = asyncio.Event()
    active = 0
    peak = 0

    async def job(_db: Any) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        entered.set()
        await gate.wait()
        active -= 1

    name = f"job-{uuid.uuid4().hex}"
    async with (
        PgPool(PoolSettings(url=postgres_dsn, max_size=2)) as p1,
        PgPool(PoolSettings(url=postgres_dsn, max_size=2)) as p2,
    ):
        r1, r2 = Runner(job, 60, pool=p1, name=name), Runner(job, 60, pool=p2, name=name)
        first = asyncio.create_task(r1.run_once())
        await entered.wait()
        assert await r2.run_once() is False  # the other worker holds the lock
        gate.set()
        assert await first is True
        # many rounds started at the same instant: never two at once
        for _ in range(20):
            entered.clear()
            gate.clear()
            both = asyncio.gather(r1.run_once(), r2.run_once())
            await entered.wait()
            gate.set()
            assert sorted(await both) in ([False, True], [True, True])
        assert peak == 1
        s1, s2 = r1.stats(), r2.stats()
        assert s1.runs + s2.runs >= 21 and s2.skipped >= 1
        assert s1.runs + s1.skipped + s2.runs + s2.skipped == 42


async def test_runner_through_pgbouncer_uses_the_transaction_lock(
    pgbouncer_dsn: str, postgres_dsn: str
) -> None:
    entered = asyncio.Event()
    gate = asyncio.Event()

    async def job(_db: Any) -> None:
        entered.set()
        await gate.wait()

    name = f"job-{uuid.uuid4().hex}"
    settings = PoolSettings(url=pgbouncer_dsn, max_size=3, pooler="pgbouncer-transaction")
    async with PgPool(settings) as p1, PgPool(settings) as p2:
        with pytest.raises(ConfigurationError, match="needs a pool"):
            Runner(job, 1, pool=object(), lock="transaction")  # a bare connection is refused
        r1 = Runner(job, 60, pool=p1, name=name, lock="transaction")
        r2 = Runner(job, 60, pool=p2, name=name, lock="transaction")
        first = asyncio.create_task(r1.run_once())
        await entered.wait()
        for _ in range(5):  # whichever server connection PgBouncer picks, the lock holds
            assert await r2.run_once() is False
        gate.set()
        assert await first is True
        assert await r2.run_once() is True  # released with the transaction


@pytest.mark.parametrize("lock", ["session", "transaction"])
async def test_runner_cancels_the_job_when_its_lock_connection_dies(
    pool: PgPool, request: pytest.FixtureRequest, lock: Literal["session", "transaction"]
) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def job(_db: Any) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    name = f"job-{uuid.uuid4().hex}"
    if lock == "transaction":  # through PgBouncer in transaction mode
        dsn = request.getfixturevalue("pgbouncer_dsn")
        settings = PoolSettings(url=dsn, max_size=3, pooler="pgbouncer-transaction")
        runner_pool = await PgPool(settings).open()
    else:
        runner_pool = pool
    runner = Runner(job, 60, pool=runner_pool, name=name, lock=lock)
    task = asyncio.create_task(runner.run_once())
    await started.wait()
    from scalekit.maintenance._runner import lock_key

    key = lock_key(name)
    pid = await pool.fetchval(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND ((classid::int8 << 32) | objid::int8) = ($1::int8 & x'ffffffffffffffff'::int8)",
        key,
    )
    assert pid is not None
    await pool.execute("SELECT pg_terminate_backend($1)", pid)
    with pytest.raises(ConnectionError):
        await task
    assert cancelled.is_set()
    stats = runner.stats()
    assert "lost" in (stats.last_error or "") and stats.failures == 1 and stats.runs == 0
    other = Runner(lambda _db: asyncio.sleep(0), 60, pool=runner_pool, name=name, lock=lock)
    assert await other.run_once() is True  # the server released the lock
    if runner_pool is not pool:
        await runner_pool.close()


async def test_run_every_runs_jobs_and_counts_them(pool: PgPool, schema: str) -> None:
    t = f"{schema}.logs"
    await pool.execute(f"""
        CREATE TABLE {t} (id bigint PRIMARY KEY, at timestamptz NOT NULL);
        CREATE INDEX ON {t} (at, id);
        INSERT INTO {t} SELECT i, now() - interval '30 days' FROM generate_series(1, 1000) i;
    """)
    from scalekit.maintenance import run_every

    clock = ParkingClock(park_after=1)  # the wait after the first run parks
    job = Retention(t, "at", keep=timedelta(days=7), batch_size=300, pause=0)
    runner = run_every(job, timedelta(minutes=5), pool=pool, clock=clock)
    await clock.parked.wait()
    await runner.stop()
    stats = runner.stats()
    assert stats.rows == 1000 and stats.batches == 4 and stats.last_error is None
    assert stats.runs >= 1 and stats.longest_batch > 0


# -- partitions ------------------------------------------------------------------
async def _views(pool: PgPool, schema: str, with_default: bool) -> str:
    t = f"{schema}.video_views"
    await pool.execute(f"""
        CREATE TABLE {t} (video_id int NOT NULL, viewed_at timestamptz NOT NULL)
            PARTITION BY RANGE (viewed_at);
        CREATE TABLE {schema}.old_2020_01 PARTITION OF {t}
            FOR VALUES FROM ('2020-01-01 00:00:00+00') TO ('2020-02-01 00:00:00+00');
        INSERT INTO {t} SELECT i % 5, '2020-01-01 00:00:00+00'::timestamptz + i * interval '1 hour'
            FROM generate_series(0, 24 * 31 - 1) i;
        CREATE TABLE {schema}.daily_views (day date, video_id int, views bigint,
                                           PRIMARY KEY (day, video_id));
    """)
    if with_default:
        await pool.execute(f"""
            CREATE TABLE {schema}.video_views_default PARTITION OF {t} DEFAULT;
            INSERT INTO {t} VALUES (1, '2019-06-01 00:00:00+00'), (2, '2019-06-02 00:00:00+00');
        """)
    return t


@pytest.mark.parametrize("with_default", [False, True], ids=["concurrently", "with-default"])
async def test_partitions_are_made_ahead_rolled_up_and_dropped(
    pool: PgPool, schema: str, with_default: bool
) -> None:
    t = await _views(pool, schema, with_default)
    job = Partitions(
        t,
        period="month",
        premake=2,
        keep=timedelta(days=365),
        rollup=(
            f"INSERT INTO {schema}.daily_views SELECT viewed_at::date, video_id, count(*) "
            "FROM {partition} GROUP BY 1, 2"
        ),
    )
    report = await job(pool)
    now = await pool.fetchval("SELECT now() AT TIME ZONE 'UTC'")
    months = []
    y, m = now.year, now.month
    for _ in range(3):
        months.append(f"video_views_p{y}{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    parts = await _ids(
        pool,
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = $1::regclass",
        t,
    )
    assert set(months) <= parts and "old_2020_01" not in parts
    assert await pool.fetchval("SELECT to_regclass($1)", f"{schema}.old_2020_01") is None
    assert report.dropped == (f"{schema}.old_2020_01",) and report.rolled_up == report.dropped
    assert len(report.created) == 3
    # aggregated before the drop: every view counted once
    assert await pool.fetchval(f"SELECT sum(views) FROM {schema}.daily_views") == 24 * 31
    if with_default:
        assert report.default_rows == 2 and not report.healthy
        assert "default partition" in report.problems[0]
    else:
        assert report.healthy and report.default_rows == 0
    # a second run: nothing to create, nothing to drop, the rollup ran once
    again = await job(pool)
    assert again.created == () and again.dropped == ()
    assert await pool.fetchval(f"SELECT sum(views) FROM {schema}.daily_views") == 24 * 31


async def test_rows_in_the_default_partition_blocking_a_month_are_reported(
    pool: PgPool, schema: str
) -> None:
    t = await _views(pool, schema, with_default=True)
    # a row for next month lands in the default before its partition exists
    await pool.execute(
        f"INSERT INTO {t} VALUES (9, date_trunc('month', now()) + interval '1 month 3 days')"
    )
    report = await Partitions(t, premake=2)(pool)
    assert report.default_rows == 3
    assert any("cannot be created until they are moved" in p for p in report.problems)
    assert len(report.created) == 2  # this month and the one after next; not the blocked one


# -- every kind of db handle, and PgBouncer in transaction mode -------------------
@pytest.fixture(params=["PgPool", "asyncpg.Pool", "asyncpg.Connection", "PgPool+PgBouncer"])
async def db(request: pytest.FixtureRequest, postgres_dsn: str) -> AsyncIterator[Any]:
    kind = request.param
    if kind == "PgPool":
        async with PgPool(PoolSettings(url=postgres_dsn, max_size=2)) as p:
            yield p
    elif kind == "asyncpg.Pool":
        async with asyncpg.create_pool(postgres_dsn, min_size=1, max_size=2) as p:
            yield p
    elif kind == "asyncpg.Connection":
        con = await asyncpg.connect(postgres_dsn)
        try:
            yield con
        finally:
            await con.close()
    else:
        dsn = request.getfixturevalue("pgbouncer_dsn")
        settings = PoolSettings(url=dsn, max_size=3, pooler="pgbouncer-transaction")
        async with PgPool(settings) as p:
            yield p


async def test_jobs_run_on_every_kind_of_db_handle(db: Any, pool: PgPool, schema: str) -> None:
    t = f"{schema}.logs"
    await pool.execute(f"""
        CREATE TABLE {t} (id bigint PRIMARY KEY, at timestamptz NOT NULL);
        CREATE INDEX ON {t} (at, id);
        INSERT INTO {t} SELECT i, now() - (i % 3) * interval '10 days'
            FROM generate_series(1, 3000) i;
    """)
    job = Retention(t, "at", keep=timedelta(days=5), batch_size=250, pause=0)
    assert await job.count(db) == 2000
    result = await job(db)
    assert result.rows == 2000 and result.batches == 8
    assert await pool.fetchval(f"SELECT count(*) FROM {t}") == 1000

    m = await _messages(pool, schema)
    total = await pool.fetchval(f"SELECT count(*) FROM {m}")
    per_conv = "SELECT count(*) AS n FROM {} GROUP BY conversation_id"
    hot = await pool.fetchval(f"SELECT sum(least(n, 50)) FROM ({per_conv.format(m)}) c")
    arch = Archival(
        m,
        parent="conversation_id",
        order_by="created_at",
        keep=50,
        archive_table=f"{schema}.messages_archive",
        parents_per_batch=40,
        pause=0,
    )
    moved = (await arch(db)).rows
    assert moved == total - hot
    assert moved == await pool.fetchval(f"SELECT count(*) FROM {schema}.messages_archive")
    assert await pool.fetchval(f"SELECT max(n) FROM ({per_conv.format(m)}) c") == 50

    v = await _views(pool, schema, with_default=False)
    report = await Partitions(v, premake=1, keep=timedelta(days=365))(db)
    assert len(report.created) == 2 and report.dropped == (f"{schema}.old_2020_01",)


async def test_an_interrupted_concurrent_detach_is_finished_by_the_next_run(
    pool: PgPool, schema: str
) -> None:
    t = await _views(pool, schema, with_default=False)
    rollup = (
        f"INSERT INTO {schema}.daily_views SELECT viewed_at::date, video_id, count(*) "
        "FROM {partition} GROUP BY 1, 2"
    )
    await Partitions(t, premake=0)(pool)  # this month's partition exists already
    job = Partitions(t, premake=0, keep=timedelta(days=365), rollup=rollup)
    # an old snapshot that DETACH ... CONCURRENTLY must wait out in its second phase
    reader = await pool.acquire()
    try:
        tx = reader.transaction(isolation="repeatable_read")
        await tx.start()
        await reader.fetchval(f"SELECT count(*) FROM {t}")
        task = asyncio.create_task(job(pool))

        async def detach_waiting() -> bool:
            n: int = await pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%DETACH PARTITION%' "
                "AND wait_event_type IS NOT NULL AND state = 'active' "
                "AND pid <> pg_backend_pid()"
            )
            return n > 0

        try:
            await _wait_for(detach_waiting, "DETACH CONCURRENTLY to wait for the old snapshot")
        finally:
            task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await tx.rollback()
    finally:
        await pool.release(reader)
    pending = await pool.fetchval(
        "SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = to_regclass($1)",
        f"{schema}.old_2020_01",
    )
    assert pending is True  # the server left it half-detached
    assert await pool.fetchval(f"SELECT count(*) FROM {schema}.daily_views") == 0

    report = await job(pool)
    assert report.dropped == (f"{schema}.old_2020_01",)
    assert await pool.fetchval("SELECT to_regclass($1)", f"{schema}.old_2020_01") is None
    assert await pool.fetchval(f"SELECT sum(views) FROM {schema}.daily_views") == 24 * 31


async def test_expired_partitions_can_be_kept_detached(
    pool: PgPool, schema: str, postgres_dsn: str
) -> None:
    t = await _views(pool, schema, with_default=False)
    job = Partitions(t, period="day", premake=1, keep=timedelta(days=30), drop=False)
    # a session that prints dates its own way reads the bounds all the same
    odd = {"DateStyle": "SQL, DMY", "TimeZone": "America/New_York"}
    con = await asyncpg.connect(postgres_dsn, server_settings=odd)
    try:
        report = await job(con)
    finally:
        await con.close()
    assert report.healthy, report.problems
    assert report.detached == (f"{schema}.old_2020_01",) and report.dropped == ()
    assert len(report.created) == 2  # today and tomorrow
    assert await pool.fetchval(f"SELECT count(*) FROM {schema}.old_2020_01") == 24 * 31
    assert await pool.fetchval(f"SELECT count(*) FROM {t}") == 0  # no longer attached

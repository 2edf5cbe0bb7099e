"""Delta sync on a real PostgreSQL: install/uninstall, pages, out-of-order commits,
tombstones and their purge, MustRefetch, filters, stats, every executor."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from scalekit.errors import ConfigurationError, CursorError, MustRefetch
from scalekit.sync import (
    ChangeFeed,
    ChangePage,
    Replica,
    install_change_tracking,
    uninstall_change_tracking,
)

pytestmark = pytest.mark.postgres
SECRET = "sync-test-secret-0123456789abcdef"


@pytest.fixture
async def con(postgres_dsn: str) -> AsyncIterator[Any]:
    c = await asyncpg.connect(postgres_dsn)
    yield c
    await c.close()


@pytest.fixture
async def schema(con: Any) -> AsyncIterator[str]:
    s = f"sk_sync_{uuid.uuid4().hex[:8]}"
    await con.execute(f"CREATE SCHEMA {s}")
    await con.execute(
        f"CREATE TABLE {s}.messages (id bigint PRIMARY KEY, owner int NOT NULL, body text)"
    )
    await con.execute(
        f"INSERT INTO {s}.messages SELECT i, i % 3, 'm' || i FROM generate_series(1, 50) i"
    )
    await install_change_tracking(con, "messages", key="id", keep=["owner"], schema=s)
    yield s
    await con.execute(f"DROP SCHEMA {s} CASCADE")


def feed(schema: str) -> ChangeFeed:
    return ChangeFeed("messages", key="id", schema=schema, secret=SECRET)


async def table_state(con: Any, schema: str, where: str = "TRUE") -> dict[int, str]:
    rows = await con.fetch(f"SELECT id, body FROM {schema}.messages WHERE {where}")
    return {r["id"]: r["body"] for r in rows}


def bodies(replica: dict[int, dict[str, Any]]) -> dict[int, str]:
    return {k: v["body"] for k, v in replica.items()}


async def test_full_then_delta_sync_on_every_executor(executor: Any, con: Any, schema: str) -> None:
    copy: dict[int, dict[str, Any]] = {}
    commits: list[str] = []
    replica = Replica(feed(schema), copy, on_commit=commits.append)
    page = await replica.sync(executor, limit=7)
    assert page.up_to_date and replica.pages == 8  # 50 rows / 7 per page
    assert len(commits) == 1 and replica.cursor == commits[0]
    assert bodies(copy) == await table_state(con, schema)
    assert "_sk_xid" not in copy[1] and set(copy[1]) == {"id", "owner", "body"}

    await con.execute(f"UPDATE {schema}.messages SET body = 'edited' WHERE id % 10 = 0")
    await con.execute(f"DELETE FROM {schema}.messages WHERE id IN (3, 4)")
    await con.execute(f"INSERT INTO {schema}.messages VALUES (100, 1, 'new')")
    before = replica.pages
    page = await replica.sync(executor, limit=500)
    assert replica.pages == before + 1
    assert sorted(page.deletes) == [3, 4]
    assert sorted(r["id"] for r in page.upserts) == [10, 20, 30, 40, 50, 100]
    assert bodies(copy) == await table_state(con, schema)
    # nothing changed: an empty, up-to-date page
    page = await replica.sync(executor)
    assert page.upserts == [] and page.deletes == [] and page.up_to_date


async def test_rows_of_open_transactions_come_in_a_later_pass(
    postgres_dsn: str, con: Any, schema: str
) -> None:
    f = feed(schema)
    page = await f.changes(con)
    assert page.up_to_date
    slow = await asyncpg.connect(postgres_dsn)
    fast = await asyncpg.connect(postgres_dsn)
    try:
        tx_slow = slow.transaction()
        await tx_slow.start()
        await slow.execute(f"INSERT INTO {schema}.messages VALUES (201, 0, 'slow')")  # older xid
        await fast.execute(f"INSERT INTO {schema}.messages VALUES (202, 0, 'fast')")  # commits
        early = await f.changes(con, page.cursor)
        # the fast row is committed, but an older transaction is open: it waits
        assert early.up_to_date and early.upserts == []
        stats = await f.stats(con)
        assert stats.xid_lag >= 2 and stats.watermark_lag > 0 and stats.complete
        await tx_slow.commit()
        late = await f.changes(con, early.cursor)
        assert sorted(r["id"] for r in late.upserts) == [201, 202]
        assert (await f.stats(con)).xid_lag >= 0
    finally:
        await slow.close()
        await fast.close()


async def test_delete_and_reinsert_orders_by_transaction(con: Any, schema: str) -> None:
    f = feed(schema)
    cursor = (await f.changes(con)).cursor
    async with con.transaction():
        await con.execute(f"DELETE FROM {schema}.messages WHERE id = 5")
        await con.execute(f"INSERT INTO {schema}.messages VALUES (5, 2, 'again')")
    await con.execute(f"DELETE FROM {schema}.messages WHERE id = 6")
    await con.execute(f"INSERT INTO {schema}.messages VALUES (6, 0, 'back')")
    await con.execute(f"INSERT INTO {schema}.messages VALUES (7000, 0, 'gone soon')")
    await con.execute(f"DELETE FROM {schema}.messages WHERE id = 7000")
    for limit in (1, 2, 500):  # page boundaries between a tombstone and a row of one key
        copy = {5: {"id": 5, "body": "old"}, 6: {"id": 6, "body": "old"}}
        c = cursor
        while True:
            page = await f.changes(con, c, limit=limit)
            assert not set(page.deletes) & {r["id"] for r in page.upserts}
            for k in page.deletes:
                copy.pop(k, None)
            for r in page.upserts:
                copy[r["id"]] = r
            c = page.cursor
            if page.up_to_date:
                break
        assert bodies(copy) == {5: "again", 6: "back"}, limit


async def test_filtered_feed_sees_moves_out_and_deletes(con: Any, schema: str) -> None:
    f = feed(schema)
    mine: dict[int, dict[str, Any]] = {}
    replica = Replica(f, mine)
    await replica.sync(con, where="owner = $1", params=[1])
    assert bodies(mine) == await table_state(con, schema, "owner = 1")
    await con.execute(f"UPDATE {schema}.messages SET owner = 2 WHERE id = 1")  # moves out
    await con.execute(f"UPDATE {schema}.messages SET owner = 1 WHERE id = 2")  # moves in
    await con.execute(f"DELETE FROM {schema}.messages WHERE id = 4")  # owner 1
    await con.execute(f"DELETE FROM {schema}.messages WHERE id = 3")  # owner 0: not ours
    page = await replica.sync(con, where="owner = $1", params=[1])
    assert sorted(page.deletes) == [1, 4]
    assert bodies(mine) == await table_state(con, schema, "owner = 1")
    # the cursor belongs to this filter: another user's filter must refetch
    with pytest.raises(MustRefetch) as info:
        await f.changes(con, replica.cursor, where="owner = $1", params=[2])
    assert info.value.reason == "filter"
    # a filter on a column the tombstones do not keep is refused clearly
    with pytest.raises(ConfigurationError, match="keep"):
        await f.changes(con, None, where="body = $1", params=["x"])


async def test_purge_raises_the_floor_and_old_cursors_must_refetch(con: Any, schema: str) -> None:
    f = feed(schema)
    copy: dict[int, dict[str, Any]] = {}
    replica = Replica(f, copy)
    await replica.sync(con)
    old = replica.cursor
    assert old is not None
    await con.execute(f"DELETE FROM {schema}.messages WHERE id <= 10")
    assert await f.purge_tombstones(con, older_than=3600) == 0  # too young
    assert await f.purge_tombstones(con, older_than=0, batch_size=3) == 10
    stats = await f.stats(con)
    assert stats.floor is not None
    with pytest.raises(MustRefetch) as info:
        await f.changes(con, old)
    assert info.value.reason == "purged"
    # a mapping replica starts over by itself and ends equal to the table
    page = await replica.sync(con)
    assert page.reset and bodies(copy) == await table_state(con, schema)
    # a callback replica gets the error
    with pytest.raises(MustRefetch):
        await Replica(f, lambda page: None, cursor=old).sync(con)
    # cursors minted after the purge are fine
    await con.execute(f"DELETE FROM {schema}.messages WHERE id = 11")
    await replica.sync(con)
    assert 11 not in copy


async def test_foreign_tampered_and_other_cluster_cursors(con: Any, schema: str) -> None:
    f = feed(schema)
    cursor = (await f.changes(con, limit=5)).cursor
    with pytest.raises(CursorError):
        await ChangeFeed("messages", schema=schema, secret="x" * 32).changes(con, cursor)
    for i in range(len(cursor)):
        ch = "A" if cursor[i] != "A" else "B"
        with pytest.raises(CursorError):
            await f.changes(con, cursor[:i] + ch + cursor[i + 1 :])
    other_table = ChangeFeed("other", schema=schema, secret=SECRET)
    with pytest.raises(MustRefetch):
        await other_table.changes(con, cursor)
    binding = f._binding(None, [], None)
    foreign = f._codec.encode([0, -1, None, None, "123", False], binding=binding)
    with pytest.raises(MustRefetch) as info:
        await f.changes(con, foreign)
    assert info.value.reason == "cluster"


async def test_install_is_idempotent_and_uninstall_removes_everything(con: Any) -> None:
    s = f"sk_sync_{uuid.uuid4().hex[:8]}"
    table = 'we"ird; DROP TABLE x --'
    q = '"' + table.replace('"', '""') + '"'
    await con.execute(f"CREATE SCHEMA {s}; CREATE TABLE {s}.{q} (k uuid PRIMARY KEY, v int)")
    try:
        for _ in range(2):
            await install_change_tracking(con, table, key="k", schema=s)
        with pytest.raises(ConfigurationError, match="tracked already"):
            await install_change_tracking(con, table, key="k", keep=["v"], schema=s)
        key = uuid.uuid4()
        await con.execute(f"INSERT INTO {s}.{q} VALUES ($1, 1)", key)
        f = ChangeFeed(table, key="k", schema=s, secret=SECRET)
        page = await f.changes(con)
        assert [r["k"] for r in page.upserts] == [key]
        await con.execute(f"DELETE FROM {s}.{q}")
        assert (await f.changes(con, page.cursor)).deletes == [key]
        for _ in range(2):
            await uninstall_change_tracking(con, table, key="k", schema=s)
        left = await con.fetchval(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = $1 AND c.relname LIKE '\\_sk\\_tomb%'",
            s,
        )
        assert left == 0
        cols = await con.fetch(
            "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 "
            "AND NOT attisdropped",
            f"{s}.{q}",
        )
        assert sorted(r["attname"] for r in cols) == ["k", "v"]
        with pytest.raises(ConfigurationError, match="not installed"):
            await f.changes(con)
        with pytest.raises(ConfigurationError, match="no column"):
            await install_change_tracking(con, table, key="nope", schema=s)
    finally:
        await con.execute(f"DROP SCHEMA {s} CASCADE")


async def test_async_callback_replica_and_commit(con: Any, schema: str) -> None:
    seen: list[ChangePage] = []
    committed: list[str] = []

    async def apply(page: ChangePage) -> None:
        seen.append(page)

    async def commit(cursor: str) -> None:
        committed.append(cursor)

    replica = Replica(feed(schema), apply, on_commit=commit)
    await replica.sync(con, limit=20)
    assert [p.reset for p in seen] == [True, False, False]
    assert [p.up_to_date for p in seen] == [False, False, True]
    assert committed == [seen[-1].cursor]


async def test_truncate_makes_every_older_cursor_refetch(con: Any, schema: str) -> None:
    f = feed(schema)
    copy: dict[int, dict[str, Any]] = {}
    replica = Replica(f, copy)
    await replica.sync(con)
    old = replica.cursor
    await con.execute(f"TRUNCATE {schema}.messages")
    await con.execute(f"INSERT INTO {schema}.messages VALUES (1, 0, 'after')")
    with pytest.raises(MustRefetch) as info:
        await f.changes(con, old)
    assert info.value.reason == "purged"
    await replica.sync(con)  # a mapping starts over by itself
    assert bodies(copy) == {1: "after"}


async def test_hostile_keep_column_cannot_break_out_of_the_trigger(con: Any) -> None:
    s = f"sk_sync_{uuid.uuid4().hex[:8]}"
    col = "o$sk0$; DROP TABLE x; $sk0$"
    q = '"' + col + '"'
    await con.execute(f"CREATE SCHEMA {s}; CREATE TABLE {s}.t (id int PRIMARY KEY, {q} int)")
    try:
        await install_change_tracking(con, "t", keep=[col], schema=s)
        await con.execute(f"INSERT INTO {s}.t VALUES (1, 5), (2, 6)")
        f = ChangeFeed("t", schema=s, secret=SECRET)
        first = await f.changes(con, where=f"{q} = $1", params=[5])
        assert [r["id"] for r in first.upserts] == [1]
        await con.execute(f"UPDATE {s}.t SET {q} = 7 WHERE id = 1")  # moves out of 5
        page = await f.changes(con, first.cursor, where=f"{q} = $1", params=[5])
        assert page.deletes == [1] and page.upserts == []
    finally:
        await con.execute(f"DROP SCHEMA {s} CASCADE")


class Recorder:
    """A connection that records the statements a page runs (and runs them)."""

    def __init__(self, con: Any) -> None:
        self.con = con
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def transaction(self, **kw: Any) -> Any:
        return self.con.transaction(**kw)

    async def fetch(self, sql: str, *args: Any) -> Any:
        self.calls.append((sql, args))
        return await self.con.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        return await self.con.fetchrow(sql, *args)


async def test_change_reads_are_index_scans_without_sort(con: Any, schema: str) -> None:
    await con.execute(
        f"INSERT INTO {schema}.messages SELECT i, i % 3, 'x' FROM generate_series(51, 5000) i"
    )
    f = feed(schema)
    first = await f.changes(con, limit=100)
    mid = Recorder(con)  # a mid-pass page: rows after an (xid, key) position
    assert len((await f.changes(mid, first.cursor, limit=100)).upserts) == 100
    replica = Replica(f, {})
    await replica.sync(con)
    await con.execute(f"DELETE FROM {schema}.messages WHERE id % 7 = 0")
    await con.execute(f"UPDATE {schema}.messages SET body = 'y' WHERE id % 5 = 0")
    await con.execute(f"ANALYZE {schema}.messages")
    tomb = await con.fetchval(
        "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n "
        "ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname LIKE '\\_sk\\_tomb\\_%'",
        schema,
    )
    await con.execute(f"ANALYZE {tomb}")
    delta = Recorder(con)  # a delta page: rows and tombstones after a pass
    await f.changes(delta, replica.cursor, limit=100)
    statements = mid.calls + delta.calls
    assert len(statements) == 3  # mid page: rows only (a full sync skips old tombstones)
    for sql, args in statements:
        plan = str(await con.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args))
        if "_sk_tomb_" in sql:
            # a small tombstone table may get a bitmap scan and a top-N sort of a few
            # hundred rows; what matters is that the (xid, key) index bounds the read
            assert "_sk_tomb_xid_idx" in plan and "Index Cond" in plan, (sql, plan)
        else:
            assert "Index Scan" in plan and '"Sort"' not in plan, (sql, plan)
            assert "_sk_xid_idx" in plan and "Index Cond" in plan, (sql, plan)

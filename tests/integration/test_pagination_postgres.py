"""Keyset and offset pages on a real PostgreSQL: every kind of executor (asyncpg
connection, asyncpg pool, PgPool, PgPool through PgBouncer in transaction mode),
the plan shape, typed cursors, refused cursors and bad input."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from scalekit.errors import ConfigurationError, CursorError
from scalekit.pagination import Keyset, Offset
from scalekit.testing import FakeClock

pytestmark = pytest.mark.postgres
SECRET = "integration-secret-0123456789abcdef"
N = 237
T0 = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
async def table(postgres_dsn: str) -> AsyncIterator[str]:
    name = f'sk_pg "{uuid.uuid4().hex[:8]}"'  # a name that needs quoting
    quoted = '"' + name.replace('"', '""') + '"'
    con = await asyncpg.connect(postgres_dsn)
    try:
        await con.execute(f"""
            CREATE TABLE {quoted} (
                id bigint PRIMARY KEY, owner int NOT NULL, created_at timestamptz NOT NULL,
                score numeric, tag uuid, title text);
            CREATE INDEX ON {quoted} (owner, created_at, id);
            INSERT INTO {quoted}
            SELECT i, i % 3,
                   '2024-01-01 00:00:00+00'::timestamptz + (i / 4) * interval '1.000001 s',
                   CASE WHEN i % 5 = 0 THEN NULL ELSE (i % 7) / 3.0 END,
                   md5(i::text)::uuid, 'tïtle ☃ ' || i
            FROM generate_series(1, {N}) i;
            ANALYZE {quoted};
        """)
        yield quoted
    finally:
        await con.execute(f"DROP TABLE {quoted}")
        await con.close()


def feed(table: str, **kw: Any) -> Keyset:
    return Keyset(
        f"SELECT id, owner, created_at, title FROM {table} WHERE owner = $1",
        [("created_at", "desc"), ("id", "desc")],
        **{"secret": SECRET, **kw},
    )


async def test_pages_cover_the_feed_in_order_on_every_executor(executor: Any, table: str) -> None:
    keyset = feed(table)
    expected = [
        r["id"]
        for r in await executor.fetch(
            f"SELECT id FROM {table} WHERE owner = 1 ORDER BY created_at DESC, id DESC"
        )
    ]
    seen: list[int] = []
    page = await keyset.page(executor, 1, limit=10)
    assert not page.has_prev and page.prev_cursor is None
    seen += [r["id"] for r in page.items]
    while page.has_next:
        assert page.next_cursor is not None
        page = await keyset.page(executor, 1, after=page.next_cursor, limit=10)
        seen += [r["id"] for r in page.items]
    assert seen == expected
    # and back from the last page, pages come in forward order
    back = [r["id"] for r in page.items]
    while page.has_prev:
        assert page.prev_cursor is not None
        page = await keyset.page(executor, 1, before=page.prev_cursor, limit=10)
        assert [r["id"] for r in page.items] == sorted(
            (r["id"] for r in page.items), key=expected.index
        )
        back = [r["id"] for r in page.items] + back
    assert back == expected


async def test_plan_is_one_index_scan_without_sort(postgres_dsn: str, table: str) -> None:
    keyset = Keyset(
        f"SELECT id, owner, created_at FROM {table} WHERE owner = $1",
        [("created_at", "asc"), ("id", "asc")],
        not_null=["created_at"],
        secret=SECRET,
    )
    con = await asyncpg.connect(postgres_dsn)
    try:
        await con.execute("SET enable_seqscan = off")  # a 237-row table: force the choice
        for backward in (False, True):
            sql = keyset.sql(after=not backward, backward=backward, n_params=1)
            assert '("_sk_page"."created_at", "_sk_page"."id") ' in sql
            plan = await con.fetchval(
                f"EXPLAIN (FORMAT JSON) {sql}", 1, T0 + timedelta(seconds=20), 80, 11
            )
            text = json.dumps(plan)
            assert "Index Scan" in text or "Index Only Scan" in text
            assert '"Sort"' not in text
            assert "Index Cond" in text and "ROW(" in text.replace("row(", "ROW(")
    finally:
        await con.close()


async def test_typed_values_round_trip_through_cursors(postgres_dsn: str, table: str) -> None:
    keyset = Keyset(
        f"SELECT id, score, tag, title, created_at FROM {table}",
        [("score", "asc nulls first"), ("title", "desc"), ("tag", "asc"), ("created_at", "desc")],
        secret=SECRET,
    )
    con = await asyncpg.connect(postgres_dsn)
    try:
        expected = [
            r["id"]
            for r in await con.fetch(
                f"SELECT id FROM {table} ORDER BY score ASC NULLS FIRST, title DESC, tag, "
                "created_at DESC, id DESC"
            )
        ]
        seen: list[int] = []
        cursor = None
        while True:
            page = await keyset.page(con, after=cursor, limit=17)
            seen += [r["id"] for r in page.items]
            if not page.has_next:
                break
            cursor = page.next_cursor
        assert seen == expected
        assert isinstance(page.items[-1]["score"], Decimal)
    finally:
        await con.close()


async def test_cursor_of_another_query_params_or_tenant_is_refused(
    postgres_dsn: str, table: str
) -> None:
    con = await asyncpg.connect(postgres_dsn)
    try:
        keyset = feed(table)
        page = await keyset.page(con, 1, limit=5, tenant="school-a")
        cursor = page.next_cursor
        assert cursor is not None
        with pytest.raises(CursorError):
            await keyset.page(con, 2, after=cursor, tenant="school-a")  # another user
        with pytest.raises(CursorError):
            await keyset.page(con, 1, after=cursor, tenant="school-b")  # another tenant
        with pytest.raises(CursorError):
            await keyset.page(con, 1, after=cursor)
        other = Keyset(
            f"SELECT id, owner, created_at, title FROM {table} WHERE owner = $1",
            [("created_at", "asc"), ("id", "asc")],
            secret=SECRET,
        )
        with pytest.raises(CursorError):
            await other.page(con, 1, after=cursor, tenant="school-a")
        with pytest.raises(CursorError):
            await feed(table, secret="another-secret-0123456789").page(
                con, 1, after=cursor, tenant="school-a"
            )
        # every single-character change of a real cursor: refused, never a page
        alphabet = "AZaz09-_."
        for i in range(len(cursor)):
            for ch in alphabet:
                if ch != cursor[i]:
                    with pytest.raises(CursorError):
                        await keyset.page(
                            con, 1, after=cursor[:i] + ch + cursor[i + 1 :], tenant="school-a"
                        )
        assert (await keyset.page(con, 1, after=cursor, tenant="school-a")).items
    finally:
        await con.close()


async def test_expired_cursor_is_refused(postgres_dsn: str, table: str) -> None:
    clock = FakeClock()
    keyset = feed(table, max_age=60, clock=clock)
    con = await asyncpg.connect(postgres_dsn)
    try:
        cursor = (await keyset.page(con, 1, limit=3)).next_cursor
        clock.advance(61)
        with pytest.raises(CursorError, match="expired"):
            await keyset.page(con, 1, after=cursor)
    finally:
        await con.close()


class NoQuery:
    """An executor that fails the test if a query reaches it."""

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        raise AssertionError(f"a query ran: {query}")


async def test_bad_input_is_refused_before_any_query(table: str) -> None:
    keyset = feed(table, max_limit=100)
    for limit in (0, -1, 101, True, 1.5):
        with pytest.raises(ConfigurationError, match="limit"):
            await keyset.page(NoQuery(), 1, limit=limit)  # type: ignore[arg-type]
    cursor_like = "c1.AAAA.AAAA"
    with pytest.raises(ConfigurationError, match="not both"):
        await keyset.page(NoQuery(), 1, after=cursor_like, before=cursor_like)
    with pytest.raises(CursorError):
        await keyset.page(NoQuery(), 1, after=cursor_like)
    for order_by in (
        [],
        "id",
        [("id", "sideways")],
        [("a", "asc"), ("a", "desc")],
        [("id", "asc"), ("created_at", "asc")],
        [("x\x00", "asc")],
        [("x" * 64, "asc")],
    ):
        with pytest.raises(ConfigurationError):
            Keyset("SELECT 1", order_by, secret=SECRET)  # type: ignore[arg-type]


async def test_sort_column_not_in_select_list_is_a_clear_error(
    postgres_dsn: str, table: str
) -> None:
    keyset = Keyset(f"SELECT id FROM {table}", [("title", "asc")], secret=SECRET)
    con = await asyncpg.connect(postgres_dsn)
    try:
        with pytest.raises(ConfigurationError, match="select list"):
            await keyset.page(con)
    finally:
        await con.close()


async def test_hostile_column_names_are_quoted(postgres_dsn: str) -> None:
    con = await asyncpg.connect(postgres_dsn)
    t = f"sk_pg_hostile_{uuid.uuid4().hex[:8]}"
    col = 'x"); DROP TABLE pg_class; --'
    qcol = '"' + col.replace('"', '""') + '"'
    try:
        await con.execute(f"CREATE TABLE {t} (id int PRIMARY KEY, {qcol} int)")
        await con.execute(f"INSERT INTO {t} SELECT i, i % 4 FROM generate_series(1, 20) i")
        keyset = Keyset(f"SELECT * FROM {t}", [(col, "desc")], secret=SECRET)
        ids: list[int] = []
        cursor = None
        while True:
            page = await keyset.page(con, after=cursor, limit=3)
            ids += [r["id"] for r in page.items]
            if not page.has_next:
                break
            cursor = page.next_cursor
        expected = [
            r["id"] for r in await con.fetch(f"SELECT id FROM {t} ORDER BY {qcol} DESC, id DESC")
        ]
        assert ids == expected
    finally:
        await con.execute(f"DROP TABLE IF EXISTS {t}")
        await con.close()


async def test_offset_pages_and_depth_limit(executor: Any, table: str) -> None:
    offset = Offset(
        f"SELECT id, created_at FROM {table} WHERE owner = $1",
        [("created_at", "desc")],
        max_depth=50,
    )
    expected = [
        r["id"]
        for r in await executor.fetch(
            f"SELECT id FROM {table} WHERE owner = 1 ORDER BY created_at DESC, id DESC"
        )
    ]
    first = await offset.page(executor, 1, offset=0, limit=20)
    second = await offset.page(executor, 1, offset=20, limit=20)
    assert [r["id"] for r in first.items + second.items] == expected[:40]
    assert first.has_next and not first.has_prev and second.has_prev
    with pytest.raises(ConfigurationError, match="Keyset"):
        await offset.page(NoQuery(), 1, offset=51, limit=20)


async def test_cursor_outliving_a_column_type_change_is_a_cursor_error(postgres_dsn: str) -> None:
    con = await asyncpg.connect(postgres_dsn)
    t = f"sk_pg_migrate_{uuid.uuid4().hex[:8]}"
    try:
        await con.execute(f"CREATE TABLE {t} (id int PRIMARY KEY, v int NOT NULL)")
        await con.execute(f"INSERT INTO {t} SELECT i, i FROM generate_series(1, 10) i")
        keyset = Keyset(f"SELECT id, v FROM {t}", [("v", "asc")], secret=SECRET)
        cursor = (await keyset.page(con, limit=3)).next_cursor
        await con.execute(f"ALTER TABLE {t} ALTER v TYPE text USING v::text")
        with pytest.raises(CursorError, match="no longer fit"):
            await keyset.page(con, after=cursor)
        with pytest.raises(asyncpg.DataError):  # the caller's own parameter: not ours
            await Keyset(f"SELECT id, v FROM {t} WHERE v = $1", [("v", "asc")], secret=SECRET).page(
                con, 5
            )
    finally:
        await con.execute(f"DROP TABLE {t}")
        await con.close()

"""Keyset paging against PostgreSQL's own ORDER BY, on a real server.

Random tables with NULLs and duplicate sort values, random mixed directions and
NULL placements, every page size from 1 to n: paging forward and then backward
yields every row exactly once, in the order of the same query with ORDER BY and no
LIMIT.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scalekit.pagination import Keyset

pytestmark = pytest.mark.postgres
SECRET = "property-test-secret-0123456789"

COLUMNS = {"a": "int", "b": "text", "c": "numeric"}
a_values = st.one_of(st.none(), st.integers(-2, 2))
b_values = st.one_of(st.none(), st.sampled_from(["", "a", "A", "é", "z", "☃"]))
c_values = st.one_of(st.none(), st.sampled_from(["0", "1.5", "-1", "1.50"]))
rows_strategy = st.lists(st.tuples(a_values, b_values, c_values), min_size=0, max_size=14)
directions = st.sampled_from(
    ["asc", "desc", "asc nulls first", "asc nulls last", "desc nulls first", "desc nulls last"]
)
order_strategy = st.lists(
    st.tuples(st.sampled_from(sorted(COLUMNS)), directions),
    min_size=1,
    max_size=3,
    unique_by=lambda t: t[0],
).flatmap(lambda cols: st.tuples(st.just(cols), directions, st.booleans(), st.booleans()))


class Db:
    def __init__(self, dsn: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.con: Any = self.run(asyncpg.connect(dsn))
        self.table = f"sk_pg_prop_{uuid.uuid4().hex[:8]}"
        self.run(
            self.con.execute(
                f"CREATE TABLE {self.table} "
                '(id int PRIMARY KEY, a int, b text COLLATE "C", c numeric)'
            )
        )

    def run(self, aw: Any) -> Any:
        return self.loop.run_until_complete(aw)

    def close(self) -> None:
        self.run(self.con.execute(f"DROP TABLE {self.table}"))
        self.run(self.con.close())
        self.loop.close()


@pytest.fixture(scope="module")
def db(postgres_dsn: str) -> Iterator[Db]:
    d = Db(postgres_dsn)
    yield d
    d.close()


async def _check(db: Db, rows: list[tuple[Any, ...]], order: Any) -> None:
    cols, key_dir, declare_not_null, explicit_key = order
    con = db.con
    await con.execute(f"TRUNCATE {db.table}")
    await con.executemany(
        f"INSERT INTO {db.table} VALUES ($1, $2, $3, $4::numeric)",
        [(i, a, b, c) for i, (a, b, c) in enumerate(rows)],
    )
    order_by: list[Any] = list(cols)
    if explicit_key:
        order_by.append(("id", key_dir))
    # a column without NULLs in this table may be declared NOT NULL (the fast path)
    not_null = [
        n for n, _ in cols if declare_not_null and all(r["abc".index(n)] is not None for r in rows)
    ]
    query = f"SELECT id, a, b, c FROM {db.table} WHERE id >= $1"
    keyset = Keyset(query, order_by, not_null=not_null, secret=SECRET, max_limit=100)
    last_dir = key_dir if explicit_key else cols[-1][1]
    spec = ", ".join(f"{n} {d}" for n, d in [*cols, ("id", last_dir.split()[0])])
    expected = [r["id"] for r in await con.fetch(f"{query} ORDER BY {spec}", 0)]
    n = len(rows)
    for size in range(1, max(n, 1) + 1):
        page = await keyset.page(con, 0, limit=size)
        forward = [r["id"] for r in page.items]
        pages = [page]
        while page.has_next:
            assert page.next_cursor is not None
            page = await keyset.page(con, 0, after=page.next_cursor, limit=size)
            assert len(page.items) <= size
            forward += [r["id"] for r in page.items]
            pages.append(page)
        assert forward == expected, (size, spec)
        backward = [r["id"] for r in page.items]
        while page.has_prev and page.items:
            assert page.prev_cursor is not None
            page = await keyset.page(con, 0, before=page.prev_cursor, limit=size)
            assert len(page.items) <= size
            backward = [r["id"] for r in page.items] + backward
        assert backward == expected, (size, spec)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rows=rows_strategy, order=order_strategy)
def test_forward_then_backward_yields_every_row_once_in_order(
    db: Db, rows: list[tuple[Any, ...]], order: Any
) -> None:
    db.run(_check(db, rows, order))

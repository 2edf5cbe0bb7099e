"""The change feed against any interleaving of transactions, on a real PostgreSQL.

Three connections write in transactions they commit or roll back in any order
(each on its own keys, so no lock waits), while a replica syncs at any point with
any page size; after everything has ended, one more sync makes the replica equal to
the table. Out-of-order commits are the normal case here, not a timing accident.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from scalekit.sync import ChangeFeed, Replica, install_change_tracking

pytestmark = pytest.mark.postgres
CONNECTIONS = 3
KEYS_EACH = 2

step = st.one_of(
    st.tuples(st.just("commit"), st.integers(0, CONNECTIONS - 1)),
    st.tuples(st.just("rollback"), st.integers(0, CONNECTIONS - 1)),
    st.tuples(
        st.sampled_from(["upsert", "delete"]),
        st.integers(0, CONNECTIONS - 1),
        st.integers(0, KEYS_EACH - 1),
    ),
    st.tuples(st.just("sync"), st.integers(1, 4)),
)


class Db:
    def __init__(self, dsn: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.schema = f"sk_sync_prop_{uuid.uuid4().hex[:8]}"
        self.admin: Any = self.run(asyncpg.connect(dsn))
        self.cons: list[Any] = [self.run(asyncpg.connect(dsn)) for _ in range(CONNECTIONS)]
        self.run(self.admin.execute(f"CREATE SCHEMA {self.schema}"))
        self.run(self.admin.execute(f"CREATE TABLE {self.schema}.t (id int PRIMARY KEY, v int)"))
        self.run(install_change_tracking(self.admin, "t", schema=self.schema))
        self.feed = ChangeFeed("t", schema=self.schema, secret="property-secret-0123456789")

    def run(self, aw: Any) -> Any:
        return self.loop.run_until_complete(aw)

    def close(self) -> None:
        for c in self.cons:
            self.run(c.close())
        self.run(self.admin.execute(f"DROP SCHEMA {self.schema} CASCADE"))
        self.run(self.admin.close())
        self.loop.close()


@pytest.fixture(scope="module")
def db(postgres_dsn: str) -> Iterator[Db]:
    d = Db(postgres_dsn)
    yield d
    d.close()


async def _check(db: Db, steps: list[tuple[Any, ...]]) -> None:
    t = f"{db.schema}.t"
    await db.admin.execute(f"DELETE FROM {t}")
    copy: dict[int, dict[str, Any]] = {}
    replica = Replica(db.feed, copy)
    await replica.sync(db.admin)
    open_tx: dict[int, Any] = {}
    value = 0
    try:
        for s in steps:
            kind = s[0]
            if kind in ("upsert", "delete") and s[1] not in open_tx:
                # a write opens a transaction on its connection, which stays open
                # until a commit or rollback step: commits come in any order
                tx = db.cons[s[1]].transaction()
                await tx.start()
                open_tx[s[1]] = tx
            if kind in ("commit", "rollback") and s[1] in open_tx:
                tx = open_tx.pop(s[1])
                await (tx.commit() if kind == "commit" else tx.rollback())
            elif kind == "upsert":
                value += 1
                key = s[1] * KEYS_EACH + s[2]
                await db.cons[s[1]].execute(
                    f"INSERT INTO {t} VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET v = $2",
                    key,
                    value,
                )
            elif kind == "delete":
                await db.cons[s[1]].execute(
                    f"DELETE FROM {t} WHERE id = $1", s[1] * KEYS_EACH + s[2]
                )
            elif kind == "sync":
                await replica.sync(db.admin, limit=s[1])
    finally:
        for tx in open_tx.values():
            await tx.commit()
    await replica.sync(db.admin, limit=3)
    truth = {r["id"]: r["v"] for r in await db.admin.fetch(f"SELECT id, v FROM {t}")}
    assert {k: r["v"] for k, r in copy.items()} == truth


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(step, max_size=50))
@example(steps=[("upsert", 0, 0), ("commit", 0), ("sync", 2), ("delete", 0, 0), ("commit", 0)])
@example(  # delete and re-insert of one key in one transaction, then in two
    steps=[
        ("upsert", 0, 0),
        ("commit", 0),
        ("sync", 1),
        ("delete", 0, 0),
        ("upsert", 0, 0),
        ("commit", 0),
        ("delete", 1, 1),
        ("commit", 1),
        ("upsert", 1, 1),
        ("commit", 1),
    ]
)
def test_replica_equals_table_after_any_interleaving(db: Db, steps: list[tuple[Any, ...]]) -> None:
    db.run(_check(db, steps))


def test_out_of_order_commit_example(db: Db) -> None:
    steps: list[tuple[Any, ...]] = [
        ("upsert", 0, 0),
        ("upsert", 1, 0),
        ("commit", 1),
        ("sync", 2),
        ("commit", 0),
        ("sync", 2),
        ("delete", 2, 0),
        ("upsert", 1, 1),
        ("commit", 1),
        ("sync", 1),
        ("commit", 2),
    ]
    db.run(_check(db, steps))

"""ChangeFeed pages and lag in the metrics registry, on the real PostgreSQL (issue 14)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from scalekit.observability import Metric, default_registry
from scalekit.sync import ChangeFeed, install_change_tracking

SECRET = "metrics-sync-test-secret-0123456789"


def metric(name: str) -> Metric:
    (m,) = [m for m in default_registry.collect() if m.name == name]
    return m


@pytest.fixture
async def con(postgres_dsn: str) -> AsyncIterator[Any]:
    c = await asyncpg.connect(postgres_dsn)
    yield c
    await c.close()


async def test_pages_rows_and_watermark_lag(postgres_dsn: str, con: Any) -> None:
    schema = f"sk_msync_{uuid.uuid4().hex[:8]}"
    await con.execute(f"CREATE SCHEMA {schema}")
    try:
        await con.execute(f"CREATE TABLE {schema}.notes (id bigint PRIMARY KEY, body text)")
        await con.execute(
            f"INSERT INTO {schema}.notes SELECT i, 'n' || i FROM generate_series(1, 25) i"
        )
        await install_change_tracking(con, "notes", key="id", schema=schema)
        feed = ChangeFeed("notes", key="id", schema=schema, secret=SECRET)
        cursor = None
        sizes = []
        while True:
            page = await feed.changes(con, cursor, limit=10)
            sizes.append(len(page.upserts) + len(page.deletes))
            cursor = page.cursor
            if page.up_to_date:
                break
        assert sizes == [10, 10, 5]
        label = f"{schema}.notes"
        (pages,) = [
            s for s in metric("scalekit_sync_pages_total").samples if label in str(s.labels)
        ]
        assert pages.value == 3
        (rows,) = [s for s in metric("scalekit_sync_page_rows").samples if label in str(s.labels)]
        assert rows.count == 3 and rows.value == 25
        assert dict(rows.buckets)[1.0] == 0 and dict(rows.buckets)[10.0] == 3

        # an open transaction that wrote: the watermark waits for it, the lag grows
        slow = await asyncpg.connect(postgres_dsn)
        try:
            tx = slow.transaction()
            await tx.start()
            await slow.execute(f"UPDATE {schema}.notes SET body = 'x' WHERE id = 1")
            await slow.execute("SELECT pg_sleep(0.05)")
            stats = await feed.stats(con)
            await tx.rollback()
        finally:
            await slow.close()
        assert stats.watermark_lag >= 0.05
        (lag,) = [
            s
            for s in metric("scalekit_sync_watermark_lag_seconds").samples
            if label in str(s.labels)
        ]
        assert lag.value == stats.watermark_lag
    finally:
        await con.execute(f"DROP SCHEMA {schema} CASCADE")

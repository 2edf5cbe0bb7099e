"""Fixtures shared by the PostgreSQL integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from scalekit.pools import PgPool, PoolSettings


@pytest.fixture(params=["connection", "asyncpg-pool", "pgpool", "pgbouncer"])
async def executor(request: pytest.FixtureRequest, postgres_dsn: str) -> AsyncIterator[Any]:
    """Each kind of executor scalekit's PostgreSQL primitives accept: an asyncpg
    connection, an asyncpg pool, a ``PgPool``, and a ``PgPool`` through PgBouncer in
    transaction mode."""
    kind = request.param
    if kind == "connection":
        con = await asyncpg.connect(postgres_dsn)
        yield con
        await con.close()
    elif kind == "asyncpg-pool":
        pool = await asyncpg.create_pool(postgres_dsn, min_size=1, max_size=2)
        yield pool
        await pool.close()
    else:
        dsn = postgres_dsn if kind == "pgpool" else request.getfixturevalue("pgbouncer_dsn")
        pooler = "direct" if kind == "pgpool" else "pgbouncer-transaction"
        async with PgPool(PoolSettings(url=dsn, max_size=2, pooler=pooler)) as pool:
            yield pool

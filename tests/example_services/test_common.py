"""The shared example schema applies on a real PostgreSQL and is idempotent."""

from __future__ import annotations

import asyncpg
import pytest

from examples.common import ServiceConfig, apply_schema

pytestmark = pytest.mark.postgres


async def test_schema_applies_twice_and_holds_rows(example_dsn: str) -> None:
    conn = await asyncpg.connect(example_dsn)
    try:
        await apply_schema(conn)  # a second time: idempotent
        await conn.execute("INSERT INTO users (id, name, tier) VALUES (1, 'a', 'paid')")
        cid = await conn.fetchval("INSERT INTO conversations (user_id) VALUES (1) RETURNING id")
        await conn.execute(
            "INSERT INTO messages (conversation_id, user_id, role, body)"
            " VALUES ($1, 1, 'user', 'hi')",
            cid,
        )
        assert await conn.fetchval("SELECT count(*) FROM messages") == 1
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("INSERT INTO users (id, name, tier) VALUES (2, 'b', 'gold')")
    finally:
        await conn.close()


def test_config_backend_url() -> None:
    assert ServiceConfig(database_url="postgresql://x/y").backend_url == "memory://"
    cfg = ServiceConfig(database_url="postgresql://x/y", redis_url="redis://h:1/0")
    assert cfg.backend_url == "redis://h:1/0"

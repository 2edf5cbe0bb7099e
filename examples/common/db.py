"""Applying the shared schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SCHEMA = Path(__file__).with_name("schema.sql")


async def apply_schema(conn: Any) -> None:
    """Create the shared tables on ``conn`` (an asyncpg connection, pool or ``PgPool``);
    safe to run again."""
    await conn.execute(SCHEMA.read_text())

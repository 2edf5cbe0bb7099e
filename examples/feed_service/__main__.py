"""Serve the feed service: ``python -m examples.feed_service`` (uvicorn on :8000).

Reads ``DATABASE_URL`` (required) and ``REDIS_URL`` (optional); ``PRIMITIVES=0``
serves the baseline without scalekit's primitives. The tables are installed (and
seeded with ``SEED_USERS`` users' posts when that is set) before serving.
"""

from __future__ import annotations

import asyncio
import os

import asyncpg
import uvicorn

from ..common import ServiceConfig, apply_schema
from . import create_app, install, seed


async def _prepare(config: ServiceConfig, users: int) -> None:
    conn = await asyncpg.connect(config.database_url)
    try:
        await apply_schema(conn)
        await install(conn)
        if users:
            await conn.execute(
                "INSERT INTO users (id, name, tier) SELECT g, 'user ' || g, "
                "CASE WHEN g % 5 = 0 THEN 'paid' ELSE 'free' END "
                "FROM generate_series(1, $1) AS g ON CONFLICT (id) DO NOTHING",
                users,
            )
            await seed(conn, users=users, seed=1)
    finally:
        await conn.close()


def main() -> None:
    config = ServiceConfig(
        database_url=os.environ["DATABASE_URL"],
        redis_url=os.environ.get("REDIS_URL") or None,
        primitives=os.environ.get("PRIMITIVES", "1") != "0",
    )
    asyncio.run(_prepare(config, int(os.environ.get("SEED_USERS", "0"))))
    uvicorn.run(create_app(config), host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))


if __name__ == "__main__":
    main()

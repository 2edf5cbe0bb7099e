"""Serve the chat service: ``python -m examples.chat_service --database-url postgresql://...``.

Creates the schema, seeds it when it is empty (``--users``), then serves the app
with uvicorn on ``--port``. ``--redis-url`` shares limits, caches and budgets
between processes; ``--no-primitives`` serves the baseline without them.
"""

from __future__ import annotations

import argparse
import asyncio

import asyncpg
import uvicorn

from ..common import ServiceConfig, apply_schema
from .app import create_app
from .data import install, seed


async def prepare(database_url: str, users: int, seed_value: int) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await apply_schema(conn)
        await install(conn)
        if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM users)"):
            await seed(conn, users=users, seed=seed_value)
            print(f"seeded {users} users")
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.chat_service", description=__doc__)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument(
        "--users", type=int, default=1000, help="users to seed an empty database with"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-primitives", action="store_true", help="the baseline without them")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    asyncio.run(prepare(args.database_url, args.users, args.seed))
    config = ServiceConfig(
        database_url=args.database_url,
        redis_url=args.redis_url,
        primitives=not args.no_primitives,
    )
    uvicorn.run(create_app(config), host=args.host, port=args.port)


if __name__ == "__main__":
    main()

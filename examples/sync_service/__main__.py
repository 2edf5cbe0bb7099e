"""Serve the sync service: ``python -m examples.sync_service --database-url postgresql://...``.

Applies the shared schema and the service's change tracking (both idempotent), then
runs uvicorn. ``--redis-url`` keeps the sync intervals in Redis (shared by every
process); without it they live in this process.
"""

from __future__ import annotations

import argparse
import asyncio

import asyncpg
import uvicorn

from ..common import ServiceConfig, apply_schema
from . import create_app, install


async def _prepare(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await apply_schema(conn)
        await install(conn)
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.sync_service")
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--redis-url")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--no-primitives", action="store_true", help="full refetch on every sync")
    args = parser.parse_args()
    asyncio.run(_prepare(args.database_url))
    config = ServiceConfig(
        database_url=args.database_url,
        redis_url=args.redis_url,
        primitives=not args.no_primitives,
    )
    uvicorn.run(create_app(config), host=args.host, port=args.port)


if __name__ == "__main__":
    main()

"""Serve the directory service: ``python -m examples.directory_service`` (uvicorn, :8000).

Reads ``DATABASE_URL`` (required); ``PRIMITIVES=0`` serves the OFFSET baseline;
``SEED=1`` installs and seeds the schools first (a few seconds).
"""

from __future__ import annotations

import asyncio
import os

import asyncpg
import uvicorn

from ..common import ServiceConfig
from . import create_app, install, seed


async def _prepare(config: ServiceConfig, fill: bool) -> None:
    conn = await asyncpg.connect(config.database_url)
    try:
        await install(conn)
        if fill:
            await seed(conn, users=0, seed=1)
    finally:
        await conn.close()


def main() -> None:
    config = ServiceConfig(
        database_url=os.environ["DATABASE_URL"],
        primitives=os.environ.get("PRIMITIVES", "1") != "0",
    )
    asyncio.run(_prepare(config, os.environ.get("SEED", "0") == "1"))
    uvicorn.run(create_app(config), host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))


if __name__ == "__main__":
    main()

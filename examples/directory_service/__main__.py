"""Serve the directory service, or measure keyset against OFFSET at depth.

``python -m examples.directory_service``: uvicorn on 127.0.0.1:8000. Reads
``DATABASE_URL`` (required); ``PRIMITIVES=0`` serves the OFFSET baseline; ``SEED=1``
installs and seeds the schools first (a few seconds).

``python -m examples.directory_service measure``: installs and seeds, then runs the
workload in-process once per mode and prints its deep-page figures side by side.
"""

from __future__ import annotations

import asyncio
import os
import sys

import asyncpg
import httpx
import uvicorn

from ..common import ServiceConfig
from . import create_app, install, run_workload, seed


async def _prepare(config: ServiceConfig, fill: bool) -> None:
    conn = await asyncpg.connect(config.database_url)
    try:
        await install(conn)
        if fill:
            await seed(conn, users=0, seed=1)
    finally:
        await conn.close()


async def _measure(database_url: str) -> None:
    await _prepare(ServiceConfig(database_url=database_url), True)
    figures = {}
    for primitives in (True, False):
        app = create_app(ServiceConfig(database_url=database_url, primitives=primitives))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
                result = await run_workload(
                    client, user_ids=[], paid_ids=set(), requests=200, seed=1
                )
        figures["keyset" if primitives else "offset"] = result.figures
    print(f"{'figure':<24}{'keyset':>12}{'offset':>12}")
    for name in figures["keyset"]:
        print(f"{name:<24}{figures['keyset'][name]:>12.1f}{figures['offset'][name]:>12.1f}")


def main() -> None:
    database_url = os.environ["DATABASE_URL"]
    if sys.argv[1:] == ["measure"]:
        asyncio.run(_measure(database_url))
        return
    config = ServiceConfig(
        database_url=database_url,
        primitives=os.environ.get("PRIMITIVES", "1") != "0",
    )
    asyncio.run(_prepare(config, os.environ.get("SEED", "0") == "1"))
    uvicorn.run(create_app(config), host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))


if __name__ == "__main__":
    main()

"""Rows a delta sync sends against a full refetch, on a database you give it.

    python -m examples.sync_service.measure --database-url postgresql://localhost/scratch

The database must hold no users yet (it gets the shared schema, change tracking and
``--users`` users with 1-6 conversations of 2-21 messages each). The same workload
(simulated phones syncing while their chats change, ``run_workload``) runs once with
``primitives=False`` (every sync a full refetch) and once with delta sync, each on
simulated time, and the figures are printed side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics

import asyncpg
import httpx

from scalekit.testing import FakeClock

from ..common import ServiceConfig, WorkloadResult, apply_schema
from . import create_app, install, run_workload

SEED_SQL = """
INSERT INTO users (id, name, tier)
SELECT i, 'user ' || i, CASE WHEN i % 5 = 0 THEN 'paid' ELSE 'free' END
FROM generate_series(1, $1::int) i;
INSERT INTO conversations (user_id, title)
SELECT u, 'conversation ' || k FROM generate_series(1, $1::int) u, generate_series(1, 1 + u % 6) k;
INSERT INTO messages (conversation_id, user_id, role, body)
SELECT c.id, c.user_id, CASE WHEN k % 2 = 1 THEN 'user' ELSE 'assistant' END,
       repeat('lorem ipsum ', (1 + (c.id + k) % 20)::int)
FROM conversations c, generate_series(1, 2 + c.id % 20) k;
UPDATE conversations c SET message_count = m.n
FROM (SELECT conversation_id, count(*) AS n FROM messages GROUP BY 1) m
WHERE m.conversation_id = c.id;
"""


async def prepare(dsn: str, users: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await apply_schema(conn)
        if await conn.fetchval("SELECT EXISTS (SELECT FROM users)"):
            raise SystemExit("the database already has users: give an empty one")
        await install(conn)
        async with conn.transaction():
            for statement in filter(str.strip, SEED_SQL.split(";")):
                await conn.execute(statement, *((users,) if "$1" in statement else ()))
    finally:
        await conn.close()


async def measure(dsn: str, *, users: int, requests: int, seed: int) -> dict[bool, WorkloadResult]:
    paid = {u for u in range(1, users + 1) if u % 5 == 0}
    results = {}
    for primitives in (False, True):
        clock = FakeClock()
        config = ServiceConfig(database_url=dsn, primitives=primitives, clock=clock.now)
        app = create_app(config)
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://svc") as http,
        ):
            results[primitives] = await run_workload(
                http,
                user_ids=list(range(1, users + 1)),
                paid_ids=paid,
                requests=requests,
                seed=seed,
                clock=clock,
            )
    return results


def _share(sent: float, refetch: float) -> str:
    return f"{sent / refetch:.1%}" if refetch else "-"


def report(results: dict[bool, WorkloadResult]) -> str:
    """The figures of both runs side by side."""
    off, on = results[False], results[True]
    lines = [("", "full refetch", "delta sync")]
    for name in ("syncs", "refused_syncs", "rows_synced", "full_refetch_rows", "first_sync_rows"):
        lines.append((name, f"{off.figures[name]:,.0f}", f"{on.figures[name]:,.0f}"))

    def shares(r: WorkloadResult) -> tuple[str, str]:
        f = r.figures
        later = f["rows_synced"] - f["first_sync_rows"]
        return (
            _share(f["rows_synced"], f["full_refetch_rows"]),
            _share(later, f["full_refetch_rows"] - f["first_sync_rows"]),
        )

    (off_all, off_later), (on_all, on_later) = shares(off), shares(on)
    lines.append(("rows sent / full refetch", off_all, on_all))
    lines.append(("  after each phone's first sync", off_later, on_later))

    def latency(r: WorkloadResult) -> str:
        p95 = statistics.quantiles(r.latencies_ms, n=20)[-1]
        return f"{statistics.median(r.latencies_ms):.1f} / {p95:.1f}"

    lines.append(("p50 / p95 ms, all requests", latency(off), latency(on)))
    width = [max(len(line[i]) for line in lines) for i in range(3)]
    return "\n".join(f"{a:<{width[0]}}  {b:>{width[1]}}  {c:>{width[2]}}" for a, b, c in lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.sync_service.measure")
    parser.add_argument("--database-url", required=True, help="an empty, throwaway database")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    asyncio.run(prepare(args.database_url, args.users))
    results = asyncio.run(
        measure(args.database_url, users=args.users, requests=args.requests, seed=args.seed)
    )
    print(report(results))


if __name__ == "__main__":
    main()

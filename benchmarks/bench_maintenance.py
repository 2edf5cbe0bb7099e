"""Batched retention (scalekit.maintenance.Retention) against one big DELETE.

    .venv/bin/python benchmarks/bench_maintenance.py            # 1,000,000 rows, 3 repeats
    .venv/bin/python benchmarks/bench_maintenance.py --quick    # 200,000 rows, 3 repeats

Each repeat builds a fresh table (``id`` primary key, ``created_at`` indexed with
``id``), half of whose rows are older than the cutoff, then deletes those rows
while a writer updates random rows of the whole table, one statement at a time,
for the whole run. Reported, as medians over the repeats:

- rows/s: expired rows deleted per second of the job's wall time;
- longest writer wait: the slowest writer statement (an update of a row the
  delete holds waits until the deleting transaction commits);
- writer p99 and writer statements completed while the job ran.

Rows: one ``DELETE ... WHERE created_at < cutoff`` (one transaction), and
``Retention`` with ``batch_size`` 1,000 and 5,000 (``pause=0``: the throughput
ceiling; a pause only lowers the rate further).

PostgreSQL is started locally (``tests/servers.py``) unless
``SCALEKIT_BENCH_POSTGRES_DSN`` points at a server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _harness import machine_info, print_machine, write_json

DISTS = ("asyncpg",)


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    dsn = os.environ.get("SCALEKIT_BENCH_POSTGRES_DSN")
    if dsn:
        yield dsn
        return
    from servers import start_postgres

    with start_postgres() as server:
        yield server.dsn


async def build(pool: Any, rows: int) -> Any:
    await pool.execute("""
        DROP TABLE IF EXISTS bench_events;
        CREATE TABLE bench_events (id bigint PRIMARY KEY, created_at timestamptz NOT NULL,
                                   n int NOT NULL DEFAULT 0);
        CREATE INDEX ON bench_events (created_at, id);
        DELETE FROM scalekit_maintenance_checkpoint;
    """)
    await pool.execute(
        "INSERT INTO bench_events (id, created_at) "
        "SELECT i, now() - (i % 2) * interval '30 days' - (i % 1000) * interval '1 second' "
        "FROM generate_series(1, $1) i",
        rows,
    )
    await pool.execute("VACUUM ANALYZE bench_events")
    return await pool.fetchval("SELECT now() - interval '10 days'")


async def measure(pool: Any, rows: int, job: Callable[[Any], Awaitable[int]]) -> dict[str, float]:
    cutoff = await build(pool, rows)
    expected = await pool.fetchval(
        "SELECT count(*) FROM bench_events WHERE created_at < $1", cutoff
    )
    waits: list[float] = []
    stop = asyncio.Event()

    async def writer() -> None:
        rnd = random.Random(1)
        async with pool.acquire() as con:
            while not stop.is_set():
                started = time.perf_counter()
                await con.execute(
                    "UPDATE bench_events SET n = n + 1 WHERE id = $1", rnd.randint(1, rows)
                )
                waits.append(time.perf_counter() - started)

    task = asyncio.create_task(writer())
    await asyncio.sleep(0.2)  # the writer is running before the job starts
    waits.clear()
    started = time.perf_counter()
    deleted = await job(cutoff)
    elapsed = time.perf_counter() - started
    stop.set()
    await task
    left = await pool.fetchval("SELECT count(*) FROM bench_events WHERE created_at < $1", cutoff)
    assert left == 0 and deleted == expected, (left, deleted, expected)
    waits.sort()
    return {
        "rows_per_s": deleted / elapsed,
        "seconds": elapsed,
        "longest_wait_ms": waits[-1] * 1000,
        "p99_ms": waits[int(len(waits) * 0.99)] * 1000,
        "writer_ops": float(len(waits)),
    }


async def bench(dsn: str, rows: int, repeats: int) -> list[tuple[str, dict[str, float]]]:
    from scalekit.maintenance import Retention
    from scalekit.pools import PgPool, PoolSettings

    async with PgPool(PoolSettings(url=dsn, max_size=4)) as pool:
        await pool.execute(
            "CREATE TABLE IF NOT EXISTS scalekit_maintenance_checkpoint (job text PRIMARY KEY, "
            "cutoff timestamptz, position text[], updated_at timestamptz NOT NULL DEFAULT now())"
        )

        async def one_delete(cutoff: Any) -> int:
            status = await pool.execute("DELETE FROM bench_events WHERE created_at < $1", cutoff)
            return int(status.split()[-1])

        def batched(size: int) -> Callable[[Any], Awaitable[int]]:
            async def run(cutoff: Any) -> int:
                job = Retention(
                    "bench_events", "created_at", cutoff=cutoff, batch_size=size, pause=0
                )
                return (await job(pool)).rows

            return run

        cases: list[tuple[str, Callable[[Any], Awaitable[int]]]] = [
            ("one DELETE (one transaction)", one_delete),
            ("Retention batch_size=1000", batched(1000)),
            ("Retention batch_size=5000", batched(5000)),
        ]
        out: list[tuple[str, dict[str, float]]] = []
        for name, job in cases:
            print(f"[{name}]", file=sys.stderr, flush=True)
            runs = [await measure(pool, rows, job) for _ in range(repeats)]
            out.append((name, {k: statistics.median(r[k] for r in runs) for k in runs[0]}))
        await pool.execute("DROP TABLE IF EXISTS bench_events")
        return out


def render(rows: int, results: list[tuple[str, dict[str, float]]]) -> str:
    lines = [
        f"Deleting {rows // 2:,} expired rows of {rows:,} with a writer updating random rows "
        "(medians)",
        "",
        "| job | rows/s | job time | longest writer wait | writer p99 | writer statements |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in results:
        lines.append(
            f"| {name} | {r['rows_per_s']:,.0f} | {r['seconds']:.2f} s | "
            f"{r['longest_wait_ms']:,.1f} ms | {r['p99_ms']:,.2f} ms | {r['writer_ops']:,.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="200,000 rows, 3 repeats")
    ap.add_argument("--rows", type=int)
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--json", metavar="PATH", help="also write every number as JSON")
    args = ap.parse_args()
    rows = args.rows or (200_000 if args.quick else 1_000_000)
    repeats = args.repeats or 3
    info = machine_info(DISTS)
    print("# scalekit.maintenance: batched retention vs one DELETE\n")
    print_machine(info)
    started = time.perf_counter()
    with postgres() as dsn:
        results = asyncio.run(bench(dsn, rows, repeats))
    print(render(rows, results) + "\n")
    print(f"_Total time: {time.perf_counter() - started:.0f} s._")
    if args.json:
        write_json(args.json, {"machine": info, "rows": rows, "results": dict(results)})


if __name__ == "__main__":
    main()

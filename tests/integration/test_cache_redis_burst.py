"""The Redis cache under bursts and a hung server, on the real Redis of the suite.

- a storm of 1,000 callers of one cold key costs a handful of commands (counted with
  ``INFO commandstats`` on the server) and one load;
- the same burst from a cold start (a new backend: no connection yet) loads once,
  without a backend error, on a few connections;
- no async path blocks the event loop, even while Redis is ``SIGSTOP``ped and the
  cache's clock has never measured Redis ``TIME`` (a loop-lag probe).
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from typing import Any

import pytest
import redis

from scalekit import RedisBackend
from scalekit.cache import Cache, CacheOptions
from scalekit.cache._redis import RedisCacheBackend, _ServerClock
from scalekit.errors import BackendError

pytestmark = pytest.mark.redis

#: commands of the test's own bookkeeping, not of the cache
_OWN = ("cmdstat_info", "cmdstat_config")


def _commands(raw: redis.Redis) -> dict[str, int]:
    stats: dict[str, Any] = raw.info("commandstats")
    return {name: int(value["calls"]) for name, value in stats.items() if not name.startswith(_OWN)}


class CountingBackend(RedisBackend):
    """The real backend, counting the commands the cache sends (its round trips)."""

    sent: list[str]

    def execute(self, *command: Any) -> Any:
        self.sent.append(str(command[0]))
        return super().execute(*command)

    async def aexecute(self, *command: Any) -> Any:
        self.sent.append(str(command[0]))
        return await super().aexecute(*command)

    def evalsha(self, script: Any, keys: Any, args: Any) -> Any:
        self.sent.append(f"EVALSHA {script.name}")
        return super().evalsha(script, keys, args)

    async def aevalsha(self, script: Any, keys: Any, args: Any) -> Any:
        self.sent.append(f"EVALSHA {script.name}")
        return await super().aevalsha(script, keys, args)


class GatedBackend(RedisBackend):
    """The real backend; each GET waits for ``gate`` first (a slow network)."""

    gate: asyncio.Event

    async def aexecute(self, *command: Any) -> Any:
        if command[0] == "GET":
            await self.gate.wait()
        return await super().aexecute(*command)


def _connections(raw: redis.Redis) -> int:
    return int(raw.info("stats")["total_connections_received"])


async def test_cold_key_storm_is_a_handful_of_commands(fresh_redis_url: str) -> None:
    raw = redis.Redis.from_url(fresh_redis_url)
    backend = CountingBackend(fresh_redis_url)
    backend.sent = []
    cache = Cache(RedisCacheBackend(backend), name="storm")
    loads = 0

    async def query() -> dict[str, int]:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.05)  # the database's time
        return {"n": 1}

    # a warm pool (connection open, scripts loaded, clock measured), a cold key
    assert await cache.aget_or_load("warm", query) == {"n": 1}
    await asyncio.gather(*cache.backend.clock._tasks)  # type: ignore[attr-defined]
    loads = 0
    raw.config_resetstat()
    backend.sent = []
    got = await asyncio.gather(*(cache.aget_or_load("cold", query) for _ in range(1000)))
    commands = _commands(raw)
    assert got == [{"n": 1}] * 1000
    assert loads == 1
    # sent: one shared GET, one fill_begin, one fill_commit (the target: <= 10)
    assert backend.sent == ["GET", "EVALSHA fill_begin", "EVALSHA fill_commit"]
    # on the server (commandstats count the scripts' own calls too): those 2 scripts,
    # and the 1 GET plus what the scripts do inside
    assert commands["cmdstat_evalsha"] == 2, commands
    assert sum(commands.values()) <= 14, commands
    assert cache.stats().backend_errors == 0
    raw.close()


async def test_burst_from_a_cold_start_loads_once_on_a_few_connections(
    fresh_redis_url: str,
) -> None:
    raw = redis.Redis.from_url(fresh_redis_url)
    before = _connections(raw)
    # a new backend: no connection, no script loaded, the clock never measured
    cache = Cache(RedisCacheBackend(RedisBackend(fresh_redis_url)), name="burst")
    loads = 0

    async def query() -> list[int]:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.02)
        return [1, 2, 3]

    got = await asyncio.gather(*(cache.aget_or_load("cold", query) for _ in range(1000)))
    assert got == [[1, 2, 3]] * 1000
    assert loads == 1
    stats = cache.stats()
    assert stats.backend_errors == 0
    assert stats.misses == 1000 and stats.loads == 1
    # the shared read and the clock's TIME may open one connection each
    assert _connections(raw) - before <= 3
    raw.close()


async def test_no_async_path_blocks_the_loop_while_redis_is_stopped(redis_server: Any) -> None:
    """The clock's TIME (due at first use), reads, fills and writes, all while Redis
    is SIGSTOPped: the event loop keeps ticking (a blocking call would freeze it for
    the socket timeout, 1 s here)."""
    backend = RedisCacheBackend(
        RedisBackend(redis_server.url, socket_timeout=1.0, connect_timeout=1.0)
    )
    cache = Cache(backend, name="hung", backend_cooldown=60.0)
    assert isinstance(backend.clock, _ServerClock)
    lags: list[float] = []
    stop = asyncio.Event()

    async def probe() -> None:
        while not stop.is_set():
            began = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - began - 0.005)

    async def query(x: int) -> int:
        return x * 2

    pid = redis_server.process.pid
    os.kill(pid, signal.SIGSTOP)
    ticker = asyncio.create_task(probe())
    try:
        got = await asyncio.gather(
            *(cache.aget_or_load(f"k{i}", lambda i=i: query(i)) for i in range(20))
        )
        assert got == [i * 2 for i in range(20)]
        assert await cache.aget("k1", "default") == "default"
        with pytest.raises(BackendError):
            await cache.aset("k1", 1)
        # the clock's measurement was started in the loop (first use), not made inline
        await asyncio.gather(*backend.clock._tasks)
    finally:
        os.kill(pid, signal.SIGCONT)
        stop.set()
        await ticker
    assert lags, "the probe never ran"
    assert max(lags) < 0.5, sorted(lags)[-5:]


async def test_the_clock_measures_redis_time_without_blocking(fresh_redis_url: str) -> None:
    backend = RedisCacheBackend(fresh_redis_url)
    clock = backend.clock
    assert isinstance(clock, _ServerClock)
    clock._offset = -1e6  # a wrong offset: the measurement must replace it
    clock.now()  # due at first use: an asyncio task, the answer comes later
    assert len(clock._tasks) == 1
    await asyncio.gather(*clock._tasks)
    seconds, micros = redis.Redis.from_url(fresh_redis_url).time()
    assert abs(clock.now() - (seconds + micros / 1e6)) < 0.5


def test_concurrent_async_readers_share_one_get(fresh_redis_url: str) -> None:
    """Per event loop: two loops (two threads) never share a read."""
    cache = Cache(fresh_redis_url, name="share", options=CacheOptions(ttl=60))
    cache.set("k", {"a": 1})
    raw = redis.Redis.from_url(fresh_redis_url)

    async def readers() -> list[object]:
        return await asyncio.gather(*(cache.aget("k") for _ in range(100)))

    raw.config_resetstat()
    assert asyncio.run(readers()) == [{"a": 1}] * 100
    assert _commands(raw).get("cmdstat_get", 0) == 1
    raw.close()


async def test_a_cancelled_reader_does_not_strand_the_others(fresh_redis_url: str) -> None:
    backend = GatedBackend(fresh_redis_url)
    backend.gate = asyncio.Event()
    cache = Cache(RedisCacheBackend(backend), name="cancel", options=CacheOptions(ttl=60))
    await cache.aset("k", 5)
    first = asyncio.create_task(cache.aget("k"))
    await asyncio.sleep(0)  # the first reader is on its way to the GET
    others = [asyncio.create_task(cache.aget("k")) for _ in range(10)]
    await asyncio.sleep(0)  # they join it
    first.cancel()
    await asyncio.sleep(0)
    backend.gate.set()
    assert await asyncio.gather(*others) == [5] * 10
    with pytest.raises(asyncio.CancelledError):
        await first


class SyncGatedBackend(RedisBackend):
    """The real backend; each sync GET signals ``arrived``, then waits for ``gate``."""

    gate: threading.Event
    arrived: threading.Event

    def execute(self, *command: Any) -> Any:
        if command[0] == "GET":
            self.arrived.set()
            self.gate.wait(10)
        return super().execute(*command)


def test_concurrent_threads_share_one_get(fresh_redis_url: str) -> None:
    backend = SyncGatedBackend(fresh_redis_url)
    backend.gate, backend.arrived = threading.Event(), threading.Event()
    rc = RedisCacheBackend(backend)
    cache = Cache(rc, name="threads", options=CacheOptions(ttl=60))
    cache.set("k", {"a": 1})
    raw = redis.Redis.from_url(fresh_redis_url)
    raw.config_resetstat()
    results: list[object] = []

    def reader() -> None:
        results.append(cache.get("k"))

    leader = threading.Thread(target=reader)
    leader.start()
    assert backend.arrived.wait(10)  # the leader's GET is in flight (held at the gate)
    others = [threading.Thread(target=reader) for _ in range(49)]
    for t in others:
        t.start()
    shared = next(iter(rc._sreads.values()))
    for _ in range(1_000_000):  # until the 49 joined the leader's read (no timing)
        if len(shared.events) == 49:
            break
        time.sleep(0)
    backend.gate.set()
    for t in [leader, *others]:
        t.join(10)
    assert results == [{"a": 1}] * 50
    assert _commands(raw).get("cmdstat_get", 0) == 1
    raw.close()


async def test_a_cancelled_waiter_leaves_the_shared_read_alone(fresh_redis_url: str) -> None:
    backend = GatedBackend(fresh_redis_url)
    backend.gate = asyncio.Event()
    cache = Cache(RedisCacheBackend(backend), name="cancel2", options=CacheOptions(ttl=60))
    backend.gate.set()
    await cache.aset("k", 9)
    backend.gate.clear()
    readers = [asyncio.create_task(cache.aget("k")) for _ in range(10)]
    await asyncio.sleep(0)  # the first is in its GET, the nine wait for it
    readers[3].cancel()
    await asyncio.sleep(0)
    backend.gate.set()
    done = await asyncio.gather(*readers, return_exceptions=True)
    assert isinstance(done[3], asyncio.CancelledError)
    assert done[:3] + done[4:] == [9] * 9

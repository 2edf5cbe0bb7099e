"""Backends for the contract suites: every primitive x memory, fakeredis, real Redis
(auto-pipelining on, and off: ``redis-nopipe``), Redis 7, Valkey 8 and the 3-master
Redis Cluster x sync, async.

Time: the memory backend reads the test's ``FakeClock``; the Redis backends are
built with ``clock=`` so the Lua scripts receive the same fake time instead of
Redis ``TIME`` (tests/integration proves the ``TIME`` path on a real server).
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import fakeredis
import fakeredis.aioredis
import pytest
import redis

from scalekit import MemoryBackend, RedisBackend
from scalekit.testing import FakeClock

T = TypeVar("T")

#: ``redis``: the suite's main server with auto-pipelining (the default); ``redis-nopipe``:
#: the same server with ``autopipeline=False``; ``redis7`` / ``valkey``: the other families
BACKENDS = ["memory", "fakeredis", "redis", "redis-nopipe", "redis7", "valkey", "cluster"]
#: where each real-server kind comes from (fixtures of tests/conftest.py)
_SERVER_FIXTURES = {
    "redis": "fresh_redis_url",
    "redis-nopipe": "fresh_redis_url",
    "redis7": "redis7_url",
    "valkey": "valkey_url",
}
MODES = ["sync", "async"]

_prefixes = itertools.count()


async def call(value: T | Any) -> Any:
    """Await ``value`` if it is awaitable: one test body drives sync and async APIs."""
    if inspect.isawaitable(value):
        return await value
    return value


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=BACKENDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _backend(
    kind: str, clock: FakeClock, request: pytest.FixtureRequest
) -> Iterator[MemoryBackend | RedisBackend]:
    if kind == "memory":
        yield MemoryBackend()
        return
    if kind == "fakeredis":
        server = fakeredis.FakeServer()
        yield RedisBackend(
            "redis://fakeredis",
            client=fakeredis.FakeRedis(server=server),
            # no real sockets: a pool as large as any test burst (1,000 tasks)
            async_client_factory=lambda: fakeredis.aioredis.FakeRedis(
                server=server, max_connections=10_000
            ),
            clock=clock.now,
        )
        return
    if kind == "cluster":  # never flushed: every test's keys carry a prefix of its own
        yield from _cluster(kind, clock, request)
        return
    url = request.getfixturevalue(_SERVER_FIXTURES[kind])
    if kind in ("redis7", "valkey"):
        flusher = redis.Redis.from_url(url)
        flusher.flushall()
        flusher.close()
    b = RedisBackend(
        url,
        clock=clock.now,
        socket_timeout=5.0,
        connect_timeout=5.0,
        autopipeline=kind != "redis-nopipe",
    )
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def backend(
    backend_kind: str, clock: FakeClock, request: pytest.FixtureRequest
) -> Iterator[MemoryBackend | RedisBackend]:
    yield from _backend(backend_kind, clock, request)


#: the cache's backends: memory, Redis alone (pipelined, not pipelined, Valkey), tiered
#: (memory L1 + Redis L2), and the 3-master Redis Cluster (a namespace of its own per
#: test instead of a flush)
CACHE_BACKENDS = [
    *("memory", "fakeredis", "redis", "redis-nopipe", "valkey"),
    *("tiered+fakeredis", "tiered+redis"),
    *("cluster", "tiered+cluster"),
]


def _cluster(kind: str, clock: FakeClock, request: pytest.FixtureRequest) -> Iterator[RedisBackend]:
    url = request.getfixturevalue("redis_cluster_url")
    b = RedisBackend(url, clock=clock.now, socket_timeout=5.0, connect_timeout=5.0)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(params=CACHE_BACKENDS)
def cache_backend(clock: FakeClock, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A cache backend on the test's FakeClock (Redis ones get it as their clock)."""
    from scalekit.cache import MemoryCacheBackend, RedisCacheBackend, TieredCacheBackend

    kind = str(request.param)
    tiered = kind.startswith("tiered+")
    base_kind = kind.removeprefix("tiered+")
    bases = (_cluster if base_kind == "cluster" else _backend)(base_kind, clock, request)
    namespace = f"c{next(_prefixes)}"  # the cluster is not flushed between tests
    for base in bases:
        if isinstance(base, MemoryBackend):
            yield MemoryCacheBackend(clock=clock, max_entries=100)
        elif not tiered:
            yield RedisCacheBackend(base, clock=clock, namespace=namespace)
        else:
            t = TieredCacheBackend(RedisCacheBackend(base, clock=clock, namespace=namespace))
            assert t.wait_subscribed(10.0)
            try:
                yield t
            finally:
                t.close()


@pytest.fixture
def redis_client(backend: MemoryBackend | RedisBackend) -> Any:
    """The sync client of a Redis backend (skips the check for memory)."""
    if isinstance(backend, MemoryBackend):
        return None
    return backend.sync_client


@pytest.fixture
def make(backend: MemoryBackend | RedisBackend, mode: str, clock: FakeClock) -> Callable[..., Any]:
    """``make(policy, **options)`` -> a RateLimiter on ``backend``, seen through its
    async twins (``hit`` is ``ahit``) in async mode."""
    from twins import in_mode

    from scalekit.ratelimit import RateLimiter

    def factory(policy: Any, **options: Any) -> Any:
        options.setdefault("clock", clock)
        options.setdefault("prefix", f"t{next(_prefixes)}")
        return in_mode(RateLimiter(backend, policy, **options), mode)

    return factory

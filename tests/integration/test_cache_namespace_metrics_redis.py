"""Cache counters per namespace on the real Redis: the remote hit path (sync and async),
a fleet of caches, undecodable bytes, a paused server and deferred invalidations."""

from __future__ import annotations

import os
import signal
import uuid
from typing import Any

import pytest
import redis

from scalekit.cache import Cache, RedisCacheBackend, cache_key, cached, invalidate
from scalekit.observability import default_registry

pytestmark = pytest.mark.redis


def _native(cache: str, metric: str) -> dict[str, float]:
    """namespace -> value of one cache's native series (summed over instances)."""
    out: dict[str, float] = {}
    for m in default_registry.collect():
        if m.name == metric:
            for s in m.samples:
                if s.labels["cache"] == cache:
                    out[s.labels["namespace"]] = s.value
    return out


def _cache(url: str, name: str, ns: str, **options: Any) -> Cache:
    return Cache(RedisCacheBackend(url, namespace=ns), name=name, **options)


async def test_remote_hits_count_under_each_function_namespace(fresh_redis_url: str) -> None:
    name, ns = f"r-{uuid.uuid4().hex[:10]}", uuid.uuid4().hex[:8]
    writer, reader = _cache(fresh_redis_url, name, ns), _cache(fresh_redis_url, name, ns)
    loads: list[str] = []

    def functions(c: Cache) -> tuple[Any, Any]:
        @cached(ttl=60, cache=c, namespace="profile")
        def profile(uid: int) -> dict[str, int]:
            loads.append("profile")
            return {"id": uid}

        @cached(ttl=60, cache=c, namespace="feed")
        async def feed(uid: int) -> list[int]:
            loads.append("feed")
            return [uid, uid]

        return profile, feed

    w_profile, w_feed = functions(writer)
    r_profile, r_feed = functions(reader)
    assert w_profile(1) == {"id": 1}
    assert await w_feed(1) == [1, 1]
    for _ in range(3):  # another "process": every read is a Redis hit
        assert r_profile(1) == {"id": 1}
        assert await r_feed(1) == [1, 1]
    assert loads == ["profile", "feed"]

    w, r = writer.stats().namespaces, reader.stats().namespaces
    assert {ns: (p.misses, p.loads) for ns, p in w.items()} == {
        "-": (0, 0),
        "profile": (1, 1),
        "feed": (1, 1),
    }
    assert {ns: (p.hits, p.misses, p.loads) for ns, p in r.items()} == {
        "-": (0, 0, 0),
        "profile": (3, 0, 0),
        "feed": (3, 0, 0),
    }
    # the exported series sum the two instances of the cache's name
    assert _native(name, "scalekit_cache_hits_total") == {"-": 0, "profile": 3, "feed": 3}
    assert _native(name, "scalekit_cache_loads_total") == {"-": 0, "profile": 1, "feed": 1}


def test_undecodable_bytes_are_a_miss_of_the_function_and_a_cache_wide_decode_error(
    fresh_redis_url: str,
) -> None:
    name = f"r-{uuid.uuid4().hex[:10]}"
    c = _cache(fresh_redis_url, name, uuid.uuid4().hex[:8])

    @cached(ttl=60, cache=c, namespace="plan")
    def plan(uid: int) -> str:
        return "free"

    raw = redis.Redis.from_url(fresh_redis_url)
    try:
        stored = c.backend._key_names(cache_key(plan, 1))[1]  # type: ignore[attr-defined]
        raw.set(stored, b"\x80\x04\x95not ours")
        assert plan(1) == "free"  # a miss, loaded and stored over the junk
        assert plan(1) == "free"  # a hit
    finally:
        raw.close()
    st = c.stats()
    part = st.namespaces["plan"]
    assert (part.hits, part.misses, part.loads, part.decode_errors) == (1, 1, 1, 0)
    assert st.namespaces["-"].decode_errors == st.decode_errors >= 1
    assert set(_native(name, "scalekit_cache_decode_errors_total")) == {"-"}


def test_deferred_invalidations_count_under_their_namespace(redis_server: Any) -> None:
    name = f"r-{uuid.uuid4().hex[:10]}"
    c = _cache(
        redis_server.url, name, uuid.uuid4().hex[:8],
        on_invalidation_error="defer", backend_cooldown=0.05,
    )  # fmt: skip

    @cached(ttl=600, cache=c, namespace="q")
    def query(x: int) -> int:
        return x * 2

    assert query(1) == 2
    c.set("plain", 1)
    pid = redis_server.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        assert invalidate(query, 1) is False  # queued
        assert c.invalidate_namespace("q") == 0  # queued
        assert c.delete("plain") is False  # queued
        assert c.pending_invalidations == 3
    finally:
        os.kill(pid, signal.SIGCONT)
    assert c.drain_invalidations(10.0)
    parts = c.stats().namespaces
    assert (parts["q"].invalidations_deferred, parts["q"].invalidations) == (2, 2)
    assert (parts["-"].invalidations_deferred, parts["-"].invalidations) == (1, 1)
    assert _native(name, "scalekit_cache_invalidations_deferred_total") == {"-": 1, "q": 2}

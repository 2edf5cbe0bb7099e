"""The Redis cache on the suite's 3-master Redis Cluster: keys spread over every shard,
and tag, namespace and key invalidation fenced across processes (two backends on the
cluster stand for two processes, so the in-process bookkeeping of one cannot help).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from scalekit.cache import Cache, cached
from scalekit.cache._freshness import EntryMeta
from scalekit.cache._redis import RedisCacheBackend
from scalekit.testing import FakeClock

pytestmark = pytest.mark.cluster

_namespaces = itertools.count()


def _pair(url: str) -> tuple[RedisCacheBackend, RedisCacheBackend, FakeClock]:
    clock = FakeClock()
    ns = f"fence{next(_namespaces)}"
    a = RedisCacheBackend(url, namespace=ns, clock=clock)
    b = RedisCacheBackend(url, namespace=ns, clock=clock)
    return a, b, clock


def _meta(clock: FakeClock) -> EntryMeta:
    return EntryMeta(stored_at=clock.now(), ttl=60.0)


def test_entries_spread_over_every_master(redis_cluster_url: str) -> None:
    cache = Cache(
        RedisCacheBackend(redis_cluster_url, namespace=f"spread{next(_namespaces)}"),
        name="spread",
    )

    @cached(ttl=60, cache=cache, namespace="users", tags=lambda uid: ["users"])
    def user(uid: int) -> dict[str, int]:
        return {"id": uid}

    for uid in range(120):
        assert user(uid) == {"id": uid}
    raw = RedisCluster.from_url(redis_cluster_url.replace("+cluster", ""))
    backend = cache.backend
    assert isinstance(backend, RedisCacheBackend)
    per_node: dict[str, int] = {}
    for node in raw.get_primaries():
        names = list(raw.scan_iter(match=backend._pattern(""), count=1000, target_nodes=node))
        per_node[node.name] = sum(1 for n in names if b":v:" in n)
    assert len(per_node) == 3
    assert sum(per_node.values()) == 120
    assert all(n >= 10 for n in per_node.values()), per_node  # not one slot, not one node
    # and the namespace and the tag still reach all of them
    assert cache.invalidate_tags("users") == 120
    for uid in range(3):
        assert user(uid) == {"id": uid}
    assert cache.invalidate_namespace("users") == 3
    raw.close()


INVALIDATIONS: dict[str, Callable[[RedisCacheBackend, str], object]] = {
    "key": lambda b, key: b.delete(key),
    "tag": lambda b, key: b.delete_tags(["t"]),
    "namespace": lambda b, key: b.delete_prefix("app:ns:"),
    "clear": lambda b, key: b.clear(),
}


@pytest.mark.parametrize("how", sorted(INVALIDATIONS))
def test_a_fill_that_began_before_an_invalidation_never_stores(
    redis_cluster_url: str, how: str
) -> None:
    a, b, clock = _pair(redis_cluster_url)
    key, other = "app:ns:v1:{42}", "app:ns:v1:{43}"
    a.set(other, "old", _meta(clock), 60.0, ["t"])
    ticket = a.begin_fill(key, frozenset({"t"}), ("app:ns:", "app:ns:v1:"), clock.now())
    assert ticket.state == "acquired"
    INVALIDATIONS[how](b, key)  # another process invalidates while the load runs
    assert b.get(key) is None
    assert (b.get(other) is None) == (how != "key")  # what it covers is gone
    assert a.commit_fill(ticket, "stale", _meta(clock), 60.0) is False
    assert b.get(key) is None
    # a fill that begins afterwards stores
    later = a.begin_fill(key, frozenset({"t"}), (), clock.now())
    assert a.commit_fill(later, "new", _meta(clock), 60.0) is True
    entry = b.get(key)
    assert entry is not None and entry[0] == "new"


@pytest.mark.parametrize("how", sorted(INVALIDATIONS))
async def test_async_fills_are_fenced_on_the_cluster(redis_cluster_url: str, how: str) -> None:
    a, b, clock = _pair(redis_cluster_url)
    key = "app:ns:v1:{7}"
    ticket = await a.abegin_fill(key, frozenset({"t"}), (), clock.now())
    assert ticket.state == "acquired"
    ainvalidate: dict[str, Any] = {
        "key": lambda: b.adelete(key),
        "tag": lambda: b.adelete_tags(["t"]),
        "namespace": lambda: b.adelete_prefix("app:ns:"),
        "clear": lambda: b.aclear(),
    }
    await ainvalidate[how]()
    assert await a.acommit_fill(ticket, "stale", _meta(clock), 60.0) is False
    assert await b.aget(key) is None


def test_a_tag_over_many_slots_is_invalidated_whole(redis_cluster_url: str) -> None:
    a, b, clock = _pair(redis_cluster_url)
    keys = [f"k{i}" for i in range(60)]
    for key in keys:
        a.set(key, key, _meta(clock), 60.0, ["many"])
    assert len({a._slot(a._key_names(k)[1]) for k in keys}) > 30
    assert b.delete_tags(["many"]) == 60
    assert all(a.get(k) is None for k in keys)


def test_a_corrupt_key_on_the_cluster_is_a_miss(redis_cluster_url: str) -> None:
    cache = Cache(RedisCacheBackend(redis_cluster_url, namespace=f"bad{next(_namespaces)}"))
    backend = cache.backend
    assert isinstance(backend, RedisCacheBackend)
    raw = redis.RedisCluster.from_url(redis_cluster_url.replace("+cluster", ""))
    raw.hset(backend._key_names("k")[1], "f", "v")
    assert cache.get_or_load("k", lambda: 1) == 1
    assert cache.get("k") == 1
    assert cache.stats().backend_errors == 0
    raw.close()


async def test_cluster_urls_build_the_cache(redis_cluster_url: str) -> None:
    from scalekit.cache import TieredCacheBackend

    plain = Cache(redis_cluster_url, name="url")
    assert isinstance(plain.backend, RedisCacheBackend) and plain.backend.cluster
    tiered = Cache("tiered+" + redis_cluster_url, name="turl")
    assert isinstance(tiered.backend, TieredCacheBackend)
    key = f"url{next(_namespaces)}"
    await plain.aset(key, [1])
    assert await tiered.aget(key) == [1]
    assert await plain.adelete(key) is True
    tiered.backend.close()

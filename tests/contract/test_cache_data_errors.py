"""A data error is one key's problem: on every cache backend (memory, fakeredis, real
Redis, tiered, the 3-master Cluster), an entry that does not decode or a key of the
wrong type is a counted miss whose loader runs and whose entry is overwritten; never
an exception, never a wait of ``lock_timeout``, never a guard trip, and nothing
changes for any other key. Also: the direct API refuses keys that are not ``str``
the same way everywhere.
"""

from __future__ import annotations

import asyncio
import enum
import time
from typing import Any

import pytest

from scalekit.cache._core import Cache, CacheOptions
from scalekit.cache._freshness import EntryMeta
from scalekit.cache._memory import MemoryCacheBackend
from scalekit.cache._redis import _HEAD, RedisCacheBackend
from scalekit.cache._tiered import TieredCacheBackend
from scalekit.errors import ConfigurationError
from scalekit.serde import MsgpackSerializer
from scalekit.testing import FakeClock

#: long enough that a caller waiting for it would be noticed (the test would take
#: 30 s); a corrupt entry must never make anyone wait
OPTIONS = CacheOptions(ttl=60, lock_timeout=30)


def _redis_of(backend: Any) -> RedisCacheBackend | None:
    if isinstance(backend, TieredCacheBackend):
        return backend.l2
    return backend if isinstance(backend, RedisCacheBackend) else None


def _entry(b: RedisCacheBackend, clock: FakeClock, body: bytes, kind: int = 0) -> bytes:
    """An entry whose header is right and fresh for an hour, with ``body``."""
    now = clock.now()
    head = _HEAD.pack(now, 3600.0, 0.0, 0.0, 0.0, 1, kind)
    return b"SKC2" + repr(now + 3600.0).encode() + b"|" + head + body


def _junk(kind: str, b: RedisCacheBackend, clock: FakeClock) -> bytes:
    now = clock.now()
    if kind == "pickle":
        return b"\x80\x04\x95pickle"
    if kind == "older-format":
        return b"SKC1" + repr(now + 3600).encode() + b"|garbage"
    if kind == "crafted-fresh-forever":
        return b"SKC2inf|" + b"\x00" * _HEAD.size + b"\xc1Jnot json"
    if kind == "invalid-utf8-in-header":
        return b"SKC2\xff\xfe\xfd|\x80\x81" + b"\xff" * 60
    if kind == "valid-utf8-garbage":
        return ("SKC2" + repr(now + 3600) + "|ünïcödé garbage, long enough " * 3).encode()
    if kind == "another-serializer":
        return _entry(b, clock, MsgpackSerializer().dumps(41))
    if kind == "another-return-type":
        return _entry(b, clock, b.serializer.dumps("not an int"))
    if kind == "negative-nested-100000-deep":
        return _entry(b, clock, b"\xc1J" + b"[" * 100_000 + b"]" * 100_000, kind=1)
    if kind == "empty":
        return b""
    raise AssertionError(kind)


JUNK = [
    "pickle",
    "older-format",
    "crafted-fresh-forever",
    "invalid-utf8-in-header",
    "valid-utf8-garbage",
    "another-serializer",
    "another-return-type",
    "negative-nested-100000-deep",
    "empty",
]
WRONG_TYPES = ["hash", "list", "set", "zset"]


def _corrupt(backend: Any, clock: FakeClock, key: str, kind: str) -> None:
    """Put ``kind`` where ``key``'s entry lives (for memory, which stores objects and
    decodes nothing: a value of another type than the reader expects)."""
    b = _redis_of(backend)
    if b is None:
        assert isinstance(backend, MemoryCacheBackend)
        meta = EntryMeta(stored_at=clock.now(), ttl=3600.0)
        backend.set(key, {"not": "an int"}, meta, 3600.0)
        return
    name = b._key_names(key)[1]
    b.redis.execute("DEL", name)
    if kind == "hash":
        b.redis.execute("HSET", name, "field", "value")
    elif kind == "list":
        b.redis.execute("RPUSH", name, "a", "b")
    elif kind == "set":
        b.redis.execute("SADD", name, "a")
    elif kind == "zset":
        b.redis.execute("ZADD", name, 1, "a")
    else:
        b.redis.execute("SET", name, _junk(kind, b, clock))


@pytest.mark.parametrize("kind", JUNK + WRONG_TYPES)
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_corrupt_entry_is_a_counted_miss_loaded_and_overwritten(
    cache_backend: Any, clock: FakeClock, kind: str, mode: str
) -> None:
    cache = Cache(cache_backend, name="corrupt", clock=clock, options=OPTIONS)
    other_loads: list[int] = []

    def other() -> int:
        other_loads.append(1)
        return 7

    async def aother() -> int:
        return other()

    # another key, cached before the corruption
    assert cache.get_or_load("other", other, type_hint=int) == 7
    _corrupt(cache_backend, clock, "bad", kind)
    loads: list[int] = []

    def load() -> int:
        loads.append(1)
        return 42

    async def aload() -> int:
        return load()

    started = time.monotonic()
    if mode == "sync":
        got = cache.get_or_load("bad", load, type_hint=int)
        again = cache.get_or_load("bad", load, type_hint=int)
        assert cache.get_or_load("other", other, type_hint=int) == 7
    else:
        got = await cache.aget_or_load("bad", aload, type_hint=int)
        again = await cache.aget_or_load("bad", aload, type_hint=int)
        assert await cache.aget_or_load("other", aother, type_hint=int) == 7
    assert time.monotonic() - started < 15  # nobody waited for lock_timeout (30 s)
    remote = _redis_of(cache_backend) is not None
    if remote:
        assert (got, again) == (42, 42)
        assert loads == [1]  # loaded once, then overwritten: the second read hits
        assert cache.get("bad", type_hint=int) == 42
        assert cache.stats().decode_errors >= 1
    # nothing changed for the other key, and the backend was never declared down
    assert other_loads == [1]
    stats = cache.stats()
    assert stats.backend_errors == 0
    assert cache.get("other", type_hint=int) == 7


@pytest.mark.parametrize("kind", ["crafted-fresh-forever", "hash"])
async def test_a_corrupt_entry_under_a_burst_is_one_load(
    cache_backend: Any, clock: FakeClock, kind: str
) -> None:
    """200 concurrent callers of a corrupt key: one load, no errors, overwritten."""
    cache = Cache(cache_backend, name="burst", clock=clock, options=OPTIONS)
    _corrupt(cache_backend, clock, "bad", kind)
    loads = 0

    async def load() -> int:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0)
        return 5

    got = await asyncio.gather(
        *(cache.aget_or_load("bad", load, type_hint=int) for _ in range(200))
    )
    remote = _redis_of(cache_backend) is not None
    if remote:
        assert got == [5] * 200
        assert loads == 1
    assert cache.stats().backend_errors == 0


@pytest.mark.parametrize("kind", ["fence", "lease", "tagset"])
def test_wrong_typed_internal_keys_are_replaced(
    cache_backend: Any, clock: FakeClock, kind: str
) -> None:
    """A fence, lease or tag set someone overwrote with another type: the fill still
    stores, and tag invalidation still drops the entry."""
    cache = Cache(cache_backend, name="internal", clock=clock, options=OPTIONS)
    b = _redis_of(cache_backend)
    if b is not None:  # (memory has no internal keys: the same flow, uncorrupted)
        fence, _, lease = b._key_names("k")
        target = {"fence": fence, "lease": lease, "tagset": b._tag_name("t")}[kind]
        b.redis.execute("HSET", target, "f", "v")
    assert cache.get_or_load("k", lambda: 1, tags=["t"]) == 1
    assert cache.get("k") == 1
    assert cache.invalidate_tags("t") == 1
    assert cache.get("k") is None
    assert cache.stats().backend_errors == 0


class Color(enum.StrEnum):
    RED = "red"


@pytest.mark.parametrize("bad", [None, 1, b"k", 1.5, ("k",)])
async def test_direct_api_refuses_keys_that_are_not_str_everywhere(
    cache_backend: Any, clock: FakeClock, bad: Any
) -> None:
    cache = Cache(cache_backend, name="keys", clock=clock)
    calls = [
        lambda: cache.get(bad),
        lambda: cache.set(bad, 1),
        lambda: cache.delete(bad),
        lambda: cache.get_or_load(bad, lambda: 1),
        lambda: cache.refresh(bad, lambda: 1),
    ]
    for call in calls:
        with pytest.raises(ConfigurationError, match="key must be a str"):
            call()

    async def one() -> int:
        return 1

    acalls = [
        lambda: cache.aget(bad),
        lambda: cache.aset(bad, 1),
        lambda: cache.adelete(bad),
        lambda: cache.aget_or_load(bad, one),
        lambda: cache.arefresh(bad, one),
    ]
    for acall in acalls:
        with pytest.raises(ConfigurationError, match="key must be a str"):
            await acall()
    assert cache.stats().backend_errors == 0


async def test_a_str_enum_key_is_its_string(cache_backend: Any, clock: FakeClock) -> None:
    cache = Cache(cache_backend, name="enum", clock=clock)
    cache.set(Color.RED, [1])
    assert cache.get("red") == [1]
    assert await cache.aget(Color.RED) == [1]
    assert cache.get_or_load(Color.RED, lambda: [2]) == [1]
    assert cache.delete(Color.RED) is True
    assert cache.get("red") is None

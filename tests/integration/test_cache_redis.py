"""The TTL cache on real Redis servers: types, foreign bytes, fleets, faults, time."""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing as mp
import os
import signal
import threading
import time
from typing import Any

import pydantic
import pytest
import redis

from scalekit.cache import Cache, CacheOptions, cached
from scalekit.cache._redis import RedisCacheBackend
from scalekit.errors import BackendError, ConfigurationError
from scalekit.serde import PickleSerializer
from scalekit.testing import FakeClock

pytestmark = pytest.mark.redis

WAIT = 10.0


@dataclasses.dataclass(frozen=True)
class Conversation:
    id: int
    title: str
    tags: tuple[str, ...]


class Plan(pydantic.BaseModel):
    name: str
    messages_per_hour: int


def _cache(url: str, clock: FakeClock | None = None, **options: Any) -> Cache:
    backend = RedisCacheBackend(url, clock=clock)
    return Cache(backend, name="it", **options)


def test_values_come_back_as_their_annotated_types(fresh_redis_url: str) -> None:
    writer, reader = _cache(fresh_redis_url), _cache(fresh_redis_url)
    loads: list[int] = []

    def make(c: Cache) -> Any:
        @cached(ttl=60, cache=c, namespace="conv")
        def conversation(cid: int) -> Conversation:
            loads.append(cid)
            return Conversation(cid, f"chat {cid}", ("a", "b"))

        return conversation

    assert make(writer)(7) == Conversation(7, "chat 7", ("a", "b"))
    got = make(reader)(7)  # another "process": read from Redis, decoded by annotation
    assert got == Conversation(7, "chat 7", ("a", "b"))
    assert type(got) is Conversation
    assert loads == [7]

    writer.set("plan:free", Plan(name="free", messages_per_hour=20))
    plan = reader.get("plan:free", type_hint=Plan)
    assert plan == Plan(name="free", messages_per_hour=20)
    assert reader.get("plan:free") == {"name": "free", "messages_per_hour": 20}


def test_foreign_bytes_are_a_counted_miss(fresh_redis_url: str) -> None:
    c = _cache(fresh_redis_url)
    raw = redis.Redis.from_url(fresh_redis_url)
    key = "profile:1"
    name = c.backend._key_names(key)[1]  # type: ignore[attr-defined]
    for junk in (b"\x80\x04\x95pickle", b"SKC2garbage|", b'{"json": true}', b""):
        raw.set(name, junk)
        assert c.get(key, "default") == "default"
        assert c.get_or_load(key, lambda: "loaded") == "loaded"  # and overwritten
        assert c.get(key) == "loaded"
        raw.delete(name)
    assert c.stats().decode_errors == 8
    raw.close()


def test_pickle_only_when_asked_for(fresh_redis_url: str) -> None:
    with pytest.raises(ConfigurationError):
        RedisCacheBackend(fresh_redis_url, serializer=object())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="executes arbitrary code"):
        Cache(fresh_redis_url, serializer="pickle")
    c = Cache(fresh_redis_url, serializer=PickleSerializer(i_understand_pickle_executes_code=True))
    c.set("k", {1, 2})
    assert c.get("k") == {1, 2}
    # a JSON reader of the same key sees a format it does not read: a miss
    assert Cache(fresh_redis_url).get("k", "miss") == "miss"


def test_entry_times_come_from_redis_time(fresh_redis_url: str) -> None:
    backend = RedisCacheBackend(fresh_redis_url)
    server_seconds, micros = redis.Redis.from_url(fresh_redis_url).time()
    assert abs(backend.clock.now() - (server_seconds + micros / 1e6)) < 0.5
    c = Cache(backend)
    c.set("k", 1)
    entry = backend.get("k")
    assert entry is not None
    assert abs(entry[1].stored_at - (server_seconds + micros / 1e6)) < 5.0


def test_cold_key_loads_once_across_caches(fresh_redis_url: str) -> None:
    """Two caches (two processes' worth of state) on one Redis: the second waits on
    the first one's lease instead of loading."""
    a, b = _cache(fresh_redis_url), _cache(fresh_redis_url)
    started, release = threading.Event(), threading.Event()
    loads: list[str] = []

    def slow() -> str:
        loads.append("a")
        started.set()
        assert release.wait(WAIT)
        return "from-a"

    def fast() -> str:
        loads.append("b")
        return "from-b"

    got: dict[str, str] = {}
    t = threading.Thread(target=lambda: got.setdefault("a", a.get_or_load("cold", slow)))
    t.start()
    assert started.wait(WAIT)
    tb = threading.Thread(target=lambda: got.setdefault("b", b.get_or_load("cold", fast)))
    tb.start()
    release.set()
    t.join(WAIT)
    tb.join(WAIT)
    assert got == {"a": "from-a", "b": "from-a"}
    assert loads == ["a"]


def test_invalidation_in_another_cache_during_a_slow_fill(fresh_redis_url: str) -> None:
    filler, other = _cache(fresh_redis_url), _cache(fresh_redis_url)
    for how in ("key", "tag", "clear"):
        started, release = threading.Event(), threading.Event()

        def slow(started: threading.Event = started, release: threading.Event = release) -> str:
            started.set()
            assert release.wait(WAIT)
            return "old"

        t = threading.Thread(target=filler.get_or_load, args=("k", slow), kwargs={"tags": ["t"]})
        t.start()
        assert started.wait(WAIT)
        if how == "key":
            other.delete("k")
        elif how == "tag":
            other.invalidate_tags("t")
        else:
            other.clear()
        release.set()
        t.join(WAIT)
        # the fill began before the invalidation returned: it must not have stored
        assert other.get("k", "gone") == "gone", how
        assert filler.get_or_load("k", lambda: "new") == "new"
        other.delete("k")


def test_namespace_invalidation_reaches_other_caches(fresh_redis_url: str) -> None:
    a, b = _cache(fresh_redis_url), _cache(fresh_redis_url)
    n = {"calls": 0}

    def make(c: Cache) -> Any:
        @cached(ttl=60, cache=c, namespace="report", version=2)
        def report(day: int) -> int:
            n["calls"] += 1
            return day * 10

        return report

    ra, rb = make(a), make(b)
    assert ra(1) == 10 and rb(1) == 10 and n["calls"] == 1
    assert b.invalidate_namespace("report", 2) == 1
    assert ra(1) == 10 and n["calls"] == 2
    assert a.invalidate_namespace("report") == 1
    assert rb(1) == 10 and n["calls"] == 3


async def test_async_direct_api(fresh_redis_url: str) -> None:
    c = _cache(fresh_redis_url)
    await c.aset("a", [1, 2], tags=["x"])
    await c.aset("b", {"k": 1}, tags=["y"])
    assert await c.aget("a") == [1, 2]
    assert await c.ainvalidate_tags("x") == 1
    assert await c.aget("a", "gone") == "gone"
    assert await c.adelete("b") is True
    assert await c.adelete("b") is False
    await c.aset("c", 3)
    await c.aclear()
    assert await c.aget("c", "gone") == "gone"

    @cached(ttl=60, cache=c, namespace="ns")
    async def f(x: int) -> int:
        return x + 1

    assert await f(1) == 2
    assert await c.ainvalidate_namespace("ns") == 1


def _fleet_round(url: str, barrier: Any, results: Any) -> None:
    """One process of the fleet: two rounds, each on a cold key after a barrier."""
    c = Cache(RedisCacheBackend(url), name="fleet")
    r = redis.Redis.from_url(url)

    @cached(ttl=60, cache=c, namespace="trending", lock_timeout=30.0)
    def trending(round_: int) -> list[int]:
        r.incr(f"loader-runs:{round_}")
        time.sleep(0.3)  # a slow query: the others arrive while it runs
        return [round_, 1, 2]

    got = []
    for round_ in (1, 2):
        barrier.wait()
        got.append(trending(round_))
    results.put(got)


@pytest.mark.slow
def test_eight_processes_load_a_cold_key_once_per_fill(fresh_redis_url: str) -> None:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(8)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_fleet_round, args=(fresh_redis_url, barrier, results)) for _ in range(8)
    ]
    for p in procs:
        p.start()
    answers = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert answers == [[[1, 1, 2], [2, 1, 2]]] * 8
    r = redis.Redis.from_url(fresh_redis_url)
    assert int(r.get("loader-runs:1") or 0) == 1
    assert int(r.get("loader-runs:2") or 0) == 1


@pytest.mark.slow
@pytest.mark.parametrize("how", ["stop", "pause"])
def test_redis_killed_mid_run(redis_server: Any, how: str) -> None:
    clock = FakeClock()  # entry times and the cooldown; Redis expiry stays real
    c = Cache(RedisCacheBackend(redis_server.url, clock=clock), backend_cooldown=3.0)
    calls = {"n": 0}

    @cached(ttl=60, cache=c, namespace="q")
    def query(x: int) -> int:
        calls["n"] += 1
        return x * 2

    assert [query(i) for i in range(3)] == [0, 2, 4]
    assert [query(i) for i in range(3)] == [0, 2, 4]
    assert calls["n"] == 3

    pid = redis_server.process.pid
    if how == "stop":
        redis_server.stop(kill=True)
    else:
        os.kill(pid, signal.SIGSTOP)
    try:
        began = time.perf_counter()
        assert query(1) == 2  # the loader's result, nothing raised
        first = time.perf_counter() - began
        latencies = []
        for i in range(20):
            began = time.perf_counter()
            assert query(i) == 2 * i
            latencies.append(time.perf_counter() - began)
        stats = c.stats()
    finally:
        if how == "pause":
            os.kill(pid, signal.SIGCONT)
    assert first < 1.0  # one short socket timeout
    assert max(latencies) < 0.05  # then the backend is skipped during the cooldown
    assert stats.backend_errors == 1
    if how == "stop":
        with pytest.raises(BackendError):  # an invalidation cannot silently do nothing
            c.delete("anything")
        redis_server.restart()
    errors = c.stats().backend_errors
    clock.advance(3.0)  # the cooldown ends: the next call probes Redis
    before = calls["n"]
    assert query(5) == 10
    assert query(5) == 10  # cached again
    assert calls["n"] - before <= 1
    assert c.stats().backend_errors == errors, "the probe should have succeeded"


async def test_redis_down_async_returns_loader_results(redis_server: Any) -> None:
    clock = FakeClock()
    c = Cache(RedisCacheBackend(redis_server.url, clock=clock), backend_cooldown=3.0)

    @cached(ttl=60, cache=c, namespace="aq")
    async def query(x: int) -> int:
        await asyncio.sleep(0)
        return x * 3

    assert await query(2) == 6
    redis_server.stop(kill=True)
    try:
        assert await asyncio.gather(*(query(i) for i in range(50))) == [i * 3 for i in range(50)]
        # the 50 reads were in flight together: each failed once, one episode logged
        errors = c.stats().backend_errors
        assert 1 <= errors <= 50
        for i in range(50):  # during the cooldown nothing touches the network
            assert await query(i) == i * 3
        assert c.stats().backend_errors == errors
    finally:
        redis_server.restart()


def test_lease_holder_failure_lets_the_next_caller_load(fresh_redis_url: str) -> None:
    a, b = _cache(fresh_redis_url), _cache(fresh_redis_url)

    def boom() -> str:
        raise RuntimeError("db down")

    with pytest.raises(RuntimeError):
        a.get_or_load("k", boom)
    # the lease was released on failure: b loads at once instead of waiting
    began = time.perf_counter()
    assert b.get_or_load("k", lambda: "ok", options=CacheOptions(ttl=60, lock_timeout=5)) == "ok"
    assert time.perf_counter() - began < 1.0


def test_backends_by_url(fresh_redis_url: str) -> None:
    from scalekit.cache import TieredCacheBackend

    plain = Cache(fresh_redis_url)
    assert isinstance(plain.backend, RedisCacheBackend)
    tiered = Cache("tiered+" + fresh_redis_url)
    assert isinstance(tiered.backend, TieredCacheBackend)
    plain.set("k", [1])
    assert tiered.get("k") == [1]
    tiered.backend.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_negative_entry_of_an_unknown_class_is_replaced(
    fresh_redis_url: str, mode: str
) -> None:
    """A cached exception the reader does not list (another version of the code, a
    renamed class) is not served and not kept: the reader loads once and overwrites."""
    writer = Cache(fresh_redis_url, options=CacheOptions(ttl=60, cache_exceptions=(LookupError,)))

    def missing() -> int:
        raise LookupError("no such row")

    with pytest.raises(LookupError):
        writer.get_or_load("row", missing)
    reader = Cache(fresh_redis_url, options=CacheOptions(ttl=60, lock_timeout=30))
    loads: list[int] = []

    def load() -> int:
        loads.append(1)
        return 7

    async def aload() -> int:
        return load()

    for _ in range(3):
        if mode == "sync":
            assert reader.get_or_load("row", load, type_hint=int) == 7
        else:
            assert await reader.aget_or_load("row", aload, type_hint=int) == 7
    assert loads == [1]  # loaded once, stored over the foreign negative entry
    assert reader.get("row", type_hint=int) == 7

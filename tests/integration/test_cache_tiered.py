"""The tiered cache (memory L1 in front of Redis L2) on real Redis servers.

Two ``TieredCacheBackend`` objects on one Redis play two processes (each has its
own L1, subscriber connection and sender id); one test uses real separate
processes. Waits are on Events signalled by the subscriber (``on_message`` /
``on_state``), never on sleeps.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from scalekit.cache import Cache, cache_key, cached, invalidate
from scalekit.cache._redis import RedisCacheBackend
from scalekit.cache._tiered import TieredCacheBackend
from scalekit.errors import BackendError, ConfigurationError
from scalekit.testing import FakeClock

pytestmark = pytest.mark.redis

WAIT = 10.0
#: an invalidation must reach the other process' L1 within this (measured: ~1 ms)
BOUND = 1.0


class Node:
    """One "process": a tiered backend, its cache, and Events its subscriber sets."""

    def __init__(self, url: str, clock: FakeClock | None = None, **options: Any) -> None:
        self.message = threading.Event()
        self.up = threading.Event()
        self.down = threading.Event()
        self.hold_down: threading.Event | None = None  # set: the subscriber may go on
        self.received: list[dict[str, Any]] = []
        self.backend = TieredCacheBackend(
            RedisCacheBackend(url, clock=clock),
            on_message=self._on_message,
            on_state=self._on_state,
            **options,
        )
        self.cache = Cache(self.backend, name="tiered", backend_cooldown=3.0)

    def _on_message(self, msg: dict[str, Any]) -> None:
        self.received.append(msg)
        self.message.set()

    def _on_state(self, up: bool) -> None:
        if up:
            self.up.set()
            return
        self.down.set()
        if self.hold_down is not None:  # keep the subscriber down until released
            assert self.hold_down.wait(WAIT)

    def held(self, key: str) -> bool:
        """Whether L1 holds a copy of ``key``."""
        return self.backend.l1.get(key) is not None


@pytest.fixture
def nodes(fresh_redis_url: str) -> Iterator[Callable[..., Node]]:
    made: list[Node] = []

    def make(**options: Any) -> Node:
        node = Node(fresh_redis_url, **options)
        assert node.backend.wait_subscribed(WAIT)
        made.append(node)
        return node

    yield make
    for node in made:
        node.backend.close()


def server_gets(url: str) -> int:
    """GET commands the server has run so far (INFO commandstats)."""
    client = redis.Redis.from_url(url)
    try:
        return int(client.info("commandstats").get("cmdstat_get", {}).get("calls", 0))
    finally:
        client.close()


def conversation_cache(cache: Cache, db: dict[str, str], loads: list[str]) -> Any:
    @cached(ttl=300, cache=cache, namespace="conv", tags=lambda cid: (f"conv:{cid}", "convs"))
    def title(cid: str) -> str:
        loads.append(cid)
        return db[cid]

    return title


# --- hits ------------------------------------------------------------------------------


def test_hit_is_served_from_l1_without_touching_redis(redis_server: Any) -> None:
    url = redis_server.url
    a, b = Node(url), Node(url)
    try:
        assert a.backend.wait_subscribed(WAIT) and b.backend.wait_subscribed(WAIT)
        db, loads = {"1": "hello"}, []
        ta, tb = conversation_cache(a.cache, db, loads), conversation_cache(b.cache, db, loads)
        assert ta("1") == "hello"  # miss: loaded, committed to Redis and kept in L1
        gets = server_gets(url)
        assert [ta("1") for _ in range(100)] == ["hello"] * 100
        assert server_gets(url) == gets  # 100 hits, not one GET reached the server
        assert a.cache.stats().hits == 100
        assert tb("1") == "hello"  # B has no copy yet: one GET, then its own L1
        assert tb("1") == "hello"
        assert server_gets(url) == gets + 1
        assert loads == ["1"]  # one load for the fleet
    finally:
        a.backend.close()
        b.backend.close()


def test_l1_copy_keeps_the_entry_meta(nodes: Callable[..., Node]) -> None:
    a = nodes()
    a.cache.set("k", [1, 2])
    entry = a.backend.l2.get("k")
    assert entry is not None and a.backend.get("k") == entry  # read through to L2...
    copy = a.backend.l1.get("k")
    assert copy is not None and copy[1] == entry[1]  # ...kept with the same EntryMeta
    assert a.backend.get("k") is copy[0][1]  # type: ignore[index]


def test_a_reader_asking_for_another_type_reads_l2(nodes: Callable[..., Node]) -> None:
    import dataclasses

    @dataclasses.dataclass
    class Point:
        x: int
        y: int

    a, b = nodes(), nodes()
    b.cache.set("p", Point(1, 2))
    assert a.cache.get("p", type_hint=Point) == Point(1, 2)
    assert a.cache.get("p") == {"x": 1, "y": 2}  # as the Redis backend answers it
    assert a.cache.get("p", type_hint=Point) == Point(1, 2)


def test_l1_ttl_bounds_staleness_when_a_message_is_lost(fresh_redis_url: str) -> None:
    clock = FakeClock()
    a = Node(fresh_redis_url, clock=clock, l1_ttl=5.0)
    try:
        assert a.backend.wait_subscribed(WAIT)
        a.cache.set("k", "old")
        assert a.cache.get("k") == "old"
        assert a.held("k")
        # a write that sends no message (straight to L2, as if the message were lost)
        writer = RedisCacheBackend(fresh_redis_url, clock=clock)
        Cache(writer).set("k", "new")
        clock.advance(4.9)
        assert a.cache.get("k") == "old"  # the L1 copy, at most l1_ttl old
        clock.advance(0.1)
        assert a.cache.get("k") == "new"
    finally:
        a.backend.close()


# --- invalidation across "processes" -----------------------------------------------


@pytest.mark.parametrize("how", ["key", "set", "tag", "namespace", "clear"])
def test_invalidation_in_b_drops_the_copy_in_a(nodes: Callable[..., Node], how: str) -> None:
    a, b = nodes(), nodes()
    db, loads = {"7": "old"}, []
    ta, tb = conversation_cache(a.cache, db, loads), conversation_cache(b.cache, db, loads)
    assert ta("7") == "old" and ta("7") == "old"
    k = cache_key(ta, "7")
    assert a.held(k)
    db["7"] = "new"
    a.message.clear()
    began = time.perf_counter()
    if how == "key":
        assert invalidate(tb, "7") is True
    elif how == "set":
        b.cache.set(k, "new", tags=("conv:7", "convs"))
    elif how == "tag":
        assert b.cache.invalidate_tags("conv:7") == 1
    elif how == "namespace":
        assert b.cache.invalidate_namespace("conv") == 1
    else:
        b.cache.clear()
    assert a.message.wait(BOUND), "A never heard of the invalidation"
    elapsed = time.perf_counter() - began
    assert not a.held(k)
    assert elapsed < BOUND
    assert ta("7") == "new"
    assert (
        a.received[-1]["kind"]
        == {
            "key": "keys",
            "set": "keys",
            "tag": "tags",
            "namespace": "prefix",
            "clear": "clear",
        }[how]
    )
    assert b.received == []  # B ignores its own messages (applied locally already)


@pytest.mark.parametrize("how", ["key", "set", "tag", "namespace", "clear"])
async def test_async_invalidation_in_b_drops_the_copy_in_a(
    nodes: Callable[..., Node], how: str
) -> None:
    a, b = nodes(), nodes()
    db = {"7": "old"}

    def make(c: Cache) -> Any:
        @cached(ttl=300, cache=c, namespace="aconv", tags=("aconvs",))
        async def title(cid: str) -> str:
            await asyncio.sleep(0)
            return db[cid]

        return title

    ta, tb = make(a.cache), make(b.cache)
    assert await ta("7") == "old"
    k = cache_key(ta, "7")
    assert a.held(k)
    db["7"] = "new"
    a.message.clear()
    if how == "key":
        assert await b.cache.adelete(k) is True
    elif how == "set":
        await b.cache.aset(k, "new")
    elif how == "tag":
        assert await b.cache.ainvalidate_tags("aconvs") == 1
    elif how == "namespace":
        assert await b.cache.ainvalidate_namespace("aconv") == 1
    else:
        await b.cache.aclear()
    assert await asyncio.to_thread(a.message.wait, BOUND)
    assert not a.held(k)
    assert await ta("7") == "new"
    assert await tb("7") == "new"


def test_local_invalidation_drops_own_copy_at_once(nodes: Callable[..., Node]) -> None:
    a = nodes()
    a.cache.set("x", 1, tags=("t",))
    assert a.cache.get("x") == 1 and a.held("x")
    a.cache.invalidate_tags("t")
    assert not a.held("x")  # before any message could arrive
    assert a.cache.get("x") is None


def test_a_read_racing_an_invalidation_does_not_keep_the_old_value(
    nodes: Callable[..., Node],
) -> None:
    a, b = nodes(), nodes()
    b.cache.set("k", "old")
    read_done, go_on = threading.Event(), threading.Event()
    l2_get = a.backend.l2.get

    def slow_get(key: str, hint: Any = None) -> Any:
        entry = l2_get(key, hint)  # the old entry, read before the invalidation
        read_done.set()
        assert go_on.wait(WAIT)
        return entry

    a.backend.l2.get = slow_get  # type: ignore[method-assign]
    out: list[object] = []
    reader = threading.Thread(target=lambda: out.append(a.cache.get("k")))
    reader.start()
    assert read_done.wait(WAIT)
    a.message.clear()
    b.cache.set("k", "new")
    assert a.message.wait(WAIT)  # applied in A while its read was in flight
    go_on.set()
    reader.join(WAIT)
    assert out == ["old"]  # that read answers what it read...
    assert not a.held("k")  # ...but does not keep it after the invalidation
    a.backend.l2.get = l2_get  # type: ignore[method-assign]
    assert a.cache.get("k") == "new"


def test_channels_follow_the_namespace(fresh_redis_url: str) -> None:
    a = TieredCacheBackend(RedisCacheBackend(fresh_redis_url, namespace="app1"))
    b = TieredCacheBackend(RedisCacheBackend(fresh_redis_url, namespace="app2"))
    try:
        assert (a.channel, b.channel) == ("app1!tiered", "app2!tiered")
        assert a.wait_subscribed(WAIT) and b.wait_subscribed(WAIT)
        Cache(a).set("k", 1)
        assert Cache(a).get("k") == 1 and a.l1.get("k") is not None
        Cache(b).clear()  # another namespace: its message is on another channel
        ca = Cache(a)
        ca.clear()  # a message on A's channel proves the previous one never came
        assert a.messages == 0
    finally:
        a.close()
        b.close()


# --- a real second process -------------------------------------------------------------


def _invalidate_in_child(url: str, how: str, done: Any) -> None:
    c = Cache(TieredCacheBackend(RedisCacheBackend(url)), name="child")
    redis.Redis.from_url(url).set("db:7", "from the child")
    if how == "tag":
        c.invalidate_tags("conv:7")
    else:
        c.invalidate_namespace("conv")
    done.put("ok")


@pytest.mark.slow
@pytest.mark.parametrize("how", ["tag", "namespace"])
def test_another_process_invalidates_our_l1_copy(nodes: Callable[..., Node], how: str) -> None:
    a = nodes()
    url = a.backend.l2.redis.url
    raw = redis.Redis.from_url(url)
    raw.set("db:7", "original")

    @cached(ttl=300, cache=a.cache, namespace="conv", tags=lambda cid: (f"conv:{cid}",))
    def title(cid: str) -> str:
        value = raw.get(f"db:{cid}")
        assert value is not None
        return value.decode()

    assert title("7") == "original" and title("7") == "original"
    assert a.held(cache_key(title, "7"))
    ctx = mp.get_context("spawn")
    done = ctx.Queue()
    a.message.clear()
    child = ctx.Process(target=_invalidate_in_child, args=(url, how, done))
    child.start()
    assert done.get(timeout=60) == "ok"
    child.join(30)
    assert child.exitcode == 0
    assert a.message.wait(BOUND)
    assert not a.held(cache_key(title, "7"))
    assert title("7") == "from the child"


def _forked_child(backend: TieredCacheBackend, results: Any) -> None:
    copies = len(backend.l1)
    subscribed_at_fork = backend.subscribed
    ok = backend.wait_subscribed(WAIT)
    results.put((copies, subscribed_at_fork, ok, Cache(backend).get("k")))


@pytest.mark.slow
def test_a_forked_child_starts_with_an_empty_l1_and_its_own_subscriber(
    nodes: Callable[..., Node],
) -> None:
    a = nodes()
    a.cache.set("k", "v")
    assert a.cache.get("k") == "v" and a.held("k")
    ctx = mp.get_context("fork")
    results = ctx.Queue()
    child = ctx.Process(target=_forked_child, args=(a.backend, results))
    child.start()
    assert results.get(timeout=60) == (0, False, True, "v")
    child.join(30)
    assert child.exitcode == 0
    assert a.held("k") and a.backend.subscribed  # the parent is untouched


# --- the connection -------------------------------------------------------------------


def lost(caplog: pytest.LogCaptureFixture) -> int:
    """WARNING records of lost subscriptions so far."""
    return sum(
        r.levelno == logging.WARNING and "subscription lost" in r.getMessage()
        for r in caplog.records
    )


def test_killed_subscription_flushes_and_bypasses_l1_until_resubscribed(
    redis_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    url = redis_server.url
    a = Node(url)
    try:
        assert a.backend.wait_subscribed(WAIT)
        a.cache.set("k", "v")
        assert a.cache.get("k") == "v" and a.held("k")
        gets = server_gets(url)
        assert a.cache.get("k") == "v"
        assert server_gets(url) == gets  # served by L1
        a.hold_down = threading.Event()
        a.up.clear()
        raw = redis.Redis.from_url(url)
        assert raw.client_kill_filter(_type="pubsub") >= 1
        assert a.down.wait(WAIT)
        # the subscriber is held down (in on_state): L1 is empty and bypassed
        assert len(a.backend.l1) == 0 and not a.backend.subscribed
        assert [a.cache.get("k") for _ in range(3)] == ["v"] * 3
        assert server_gets(url) == gets + 3  # every read went to Redis
        assert len(a.backend.l1) == 0  # and nothing was kept
        assert a.backend.disconnects == 1
        a.hold_down.set()
        assert a.up.wait(WAIT)  # re-subscribed after a backoff
        assert a.backend.subscribed
        assert a.cache.get("k") == "v"  # one more GET, kept in L1 again
        assert a.cache.get("k") == "v"
        assert server_gets(url) == gets + 4
        assert a.backend.disconnects == 1
        assert lost(caplog) == 1
    finally:
        if a.hold_down is not None:
            a.hold_down.set()
        a.backend.close()


@pytest.mark.slow
def test_redis_down_l1_serves_nothing_and_calls_still_answer(
    redis_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()  # entry times and the guard's cooldown
    a = Node(redis_server.url, clock=clock)
    try:
        assert a.backend.wait_subscribed(WAIT)
        calls: list[int] = []

        @cached(ttl=300, cache=a.cache, namespace="q")
        def query(x: int) -> int:
            calls.append(x)
            return x * 2

        assert query(1) == 2 and query(1) == 2
        assert calls == [1] and a.held(cache_key(query, 1))
        a.up.clear()
        redis_server.stop(kill=True)
        assert a.down.wait(WAIT)
        assert len(a.backend.l1) == 0
        with pytest.raises(BackendError):
            a.backend.get(cache_key(query, 1))  # L2 raises; L1 does not answer
        assert [query(1) for _ in range(5)] == [2] * 5  # the loader's results
        assert calls == [1] * 6
        with pytest.raises(BackendError):
            a.cache.delete("anything")  # an invalidation cannot silently do nothing
        redis_server.restart()
        assert a.up.wait(WAIT)  # re-subscribed to the restarted server
        clock.advance(3.0)  # the cache's cooldown ends
        assert query(1) == 2  # loaded (the restarted server is empty), stored, kept
        gets = server_gets(redis_server.url)
        assert query(1) == 2
        assert server_gets(redis_server.url) == gets
        assert a.backend.disconnects == 1
        assert lost(caplog) == 1  # one episode, however many reconnects failed
    finally:
        a.backend.close()


@pytest.mark.slow
def test_hung_redis_is_noticed_by_the_heartbeat(redis_server: Any) -> None:
    a = Node(redis_server.url)
    pid = redis_server.process.pid
    try:
        assert a.backend.wait_subscribed(WAIT)
        a.cache.set("k", "v")
        assert a.cache.get("k") == "v" and a.held("k")
        a.up.clear()
        os.kill(pid, signal.SIGSTOP)  # no error on the connection: only silence
        try:
            began = time.perf_counter()
            assert a.down.wait(WAIT)
            noticed = time.perf_counter() - began
            assert len(a.backend.l1) == 0 and not a.backend.subscribed
        finally:
            os.kill(pid, signal.SIGCONT)
        assert noticed < 6.0  # a PING after 2 s of silence, dead 2 s later
        assert a.up.wait(WAIT)
        assert a.cache.get("k") == "v"
    finally:
        a.backend.close()


def test_an_unclosed_backend_that_is_collected_stops_its_subscriber(
    fresh_redis_url: str,
) -> None:
    backend = TieredCacheBackend(RedisCacheBackend(fresh_redis_url))
    assert backend.wait_subscribed(WAIT)
    thread = backend._thread
    assert thread is not None and thread.is_alive()
    del backend
    gc.collect()
    thread.join(WAIT)
    assert not thread.is_alive()


def test_close_stops_the_subscriber_and_bypasses_l1(nodes: Callable[..., Node]) -> None:
    a = nodes()
    a.cache.set("k", 1)
    assert a.cache.get("k") == 1 and a.held("k")
    thread = a.backend._thread
    a.backend.close()
    assert thread is not None and not thread.is_alive()
    assert not a.backend.subscribed and len(a.backend.l1) == 0
    assert a.cache.get("k") == 1  # still a working Redis cache
    assert len(a.backend.l1) == 0
    assert not a.backend.wait_subscribed(0.1)


async def test_async_reads_use_l1(nodes: Callable[..., Node]) -> None:
    a = nodes()
    await a.cache.aset("k", {"a": 1})
    assert await a.cache.aget("k") == {"a": 1}
    assert a.held("k")
    l2_aget = a.backend.l2.aget

    async def no_redis(key: str, hint: Any = None) -> Any:
        raise AssertionError("L2 read on an L1 hit")

    a.backend.l2.aget = no_redis  # type: ignore[method-assign]
    try:
        assert await a.cache.aget("k") == {"a": 1}
    finally:
        a.backend.l2.aget = l2_aget  # type: ignore[method-assign]


def test_configuration_errors(fresh_redis_url: str) -> None:
    l2 = RedisCacheBackend(fresh_redis_url)
    with pytest.raises(ConfigurationError, match="l2"):
        TieredCacheBackend(fresh_redis_url)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="l1_ttl"):
        TieredCacheBackend(l2, l1_ttl=0)
    with pytest.raises(ConfigurationError, match="channel"):
        TieredCacheBackend(l2, channel="")
    with pytest.raises(ConfigurationError, match="max_entries"):
        TieredCacheBackend(l2, l1_max_entries=0)

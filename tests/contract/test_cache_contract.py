"""Contract tests of the TTL cache on every backend (memory, fakeredis, real Redis),
sync and async.

Time is a FakeClock; concurrency is synchronised with Events and Barriers (the
async tests yield with ``asyncio.sleep(0)``, a scheduling point, never a wait on
time). The one exception is ``lock_timeout``, a real-time bound by design, tested
with a 20 ms timeout.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from scalekit import primitive_of
from scalekit._keys import escape
from scalekit.cache._core import Cache, CacheOptions, default_cache
from scalekit.cache._decorator import cache_key, cached, invalidate
from scalekit.cache._freshness import EntryMeta, classify, classify_unchecked
from scalekit.cache._keys import KeyBuilder, encode_args
from scalekit.cache._memory import MemoryCacheBackend
from scalekit.errors import ConfigurationError
from scalekit.testing import FakeClock

WAIT = 10.0  # upper bound for Event waits in threads (never reached when passing)


@pytest.fixture
def cache(cache_backend: Any, clock: FakeClock) -> Iterator[Cache]:
    c = Cache(cache_backend, name="test", clock=clock)
    yield c
    assert c.drain(WAIT)


async def until(cond: object) -> None:
    """Yield to the event loop until ``cond()`` is true (bounded number of turns)."""
    assert callable(cond)
    for _ in range(100_000):
        if cond():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


class SignallingBackend(MemoryCacheBackend):
    """Sets ``all_missed`` once ``expected`` reads of a key found nothing."""

    def __init__(self, expected: int, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.expected = expected
        self.missed = 0
        self.all_missed = threading.Event()
        self.count_lock = threading.Lock()

    def get(self, key: str) -> tuple[object, EntryMeta] | None:
        entry = super().get(key)
        if entry is None:
            with self.count_lock:
                self.missed += 1
                if self.missed >= self.expected:
                    self.all_missed.set()
        return entry


# --- hit / miss / expiry --------------------------------------------------------------


def test_sync_hit_miss_expiry(cache: Cache, clock: FakeClock) -> None:
    calls: list[int] = []

    @cached(ttl=10, cache=cache)
    def square(x: int) -> int:
        calls.append(x)
        return x * x

    assert square(3) == 9
    assert square(3) == 9
    assert calls == [3]
    clock.advance(9.999)
    assert square(3) == 9
    assert calls == [3]
    clock.advance(0.001)
    assert square(3) == 9
    assert calls == [3, 3]
    s = cache.stats()
    assert (s.hits, s.misses, s.loads, s.name) == (2, 2, 2, "test")


async def test_async_hit_miss_expiry(cache: Cache, clock: FakeClock) -> None:
    calls: list[int] = []

    @cached(ttl=timedelta(seconds=10), cache=cache)
    async def square(x: int) -> int:
        calls.append(x)
        return x * x

    assert await square(4) == 16
    assert await square(4) == 16
    assert calls == [4]
    clock.advance(10)
    assert await square(4) == 16
    assert calls == [4, 4]
    assert cache.stats().hits == 1


def test_defaults_applied_keys(cache: Cache) -> None:
    calls: list[tuple[int, int]] = []

    @cached(ttl=60, cache=cache)
    def f(a: int, b: int = 2) -> int:
        calls.append((a, b))
        return a + b

    assert f(1) == f(a=1) == f(1, 2) == f(1, b=2) == 3
    assert calls == [(1, 2)]
    assert cache_key(f, 1) == cache_key(f, a=1, b=2)
    f(1, 3)
    assert len(calls) == 2


def test_explicit_cache_api(cache: Cache, clock: FakeClock) -> None:
    assert cache.get("k") is None
    assert cache.get("k", "dflt") == "dflt"
    cache.set("k", [1, 2], options=CacheOptions(ttl=5))
    assert cache.get("k") == [1, 2]
    assert cache.get_or_load("k", lambda: [9]) == [1, 2]
    clock.advance(5)
    assert cache.get("k") is None
    assert cache.get_or_load("k", lambda: [9]) == [9]
    assert cache.delete("k") is True
    assert cache.delete("k") is False


def test_default_cache_out_of_the_box() -> None:
    calls = 0

    @cached(ttl=60)
    def answer() -> int:
        nonlocal calls
        calls += 1
        return 42

    assert answer() == answer() == 42
    assert calls == 1
    assert primitive_of(answer, Cache) is default_cache()
    assert invalidate(answer) is True


# --- single-flight --------------------------------------------------------------------


async def test_1000_async_callers_share_one_load(cache: Cache) -> None:
    release = asyncio.Event()
    calls = 0

    @cached(ttl=60, cache=cache)
    async def load(k: str) -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return f"value-{k}"

    tasks = [asyncio.create_task(load("cold")) for _ in range(1000)]
    await until(lambda: cache.stats().misses == 1000)
    release.set()
    results = await asyncio.gather(*tasks)
    assert results == ["value-cold"] * 1000
    assert calls == 1
    assert cache.stats().loads == 1


def test_8_threads_share_one_load(clock: FakeClock) -> None:
    backend = SignallingBackend(8, clock)
    cache = Cache(backend, clock=clock)
    release = threading.Event()
    calls = 0
    barrier = threading.Barrier(8)

    @cached(ttl=60, cache=cache)
    def load(k: str) -> str:
        nonlocal calls
        calls += 1
        assert release.wait(WAIT)
        return k.upper()

    results: list[str] = []

    def worker() -> None:
        barrier.wait(WAIT)
        results.append(load("cold"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    assert backend.all_missed.wait(WAIT)
    release.set()
    for t in threads:
        t.join(WAIT)
    assert results == ["COLD"] * 8
    assert calls == 1


async def test_cancelling_the_leader_fails_only_the_leader(cache: Cache) -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    calls = 0

    @cached(ttl=60, cache=cache)
    async def load() -> str:
        nonlocal calls
        calls += 1
        started.set()
        await release.wait()
        return "v"

    leader = asyncio.create_task(load())
    await started.wait()
    others = [asyncio.create_task(load()) for _ in range(5)]
    await until(lambda: cache.stats().misses == 6)
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    release.set()
    assert await asyncio.gather(*others) == ["v"] * 5
    assert calls == 1
    assert await load() == "v"  # stored although its starter was cancelled
    assert calls == 1


async def test_waiter_past_lock_timeout_loads_itself(cache: Cache) -> None:
    release = asyncio.Event()
    calls = 0

    @cached(ttl=60, cache=cache, lock_timeout=0.02)
    async def load() -> int:
        nonlocal calls
        calls += 1
        n = calls
        if n == 1:
            await release.wait()
        return n

    leader = asyncio.create_task(load())
    await until(lambda: calls == 1)
    assert await load() == 2  # waited 20 ms (real time, by design), then loaded itself
    release.set()
    assert await leader == 1
    assert await load() == 2  # the older, slower load did not overwrite the newer value


# --- freshness ------------------------------------------------------------------------


async def test_async_stale_while_revalidate(cache: Cache, clock: FakeClock) -> None:
    release = asyncio.Event()
    version = 0

    @cached(ttl=10, stale_while_revalidate=30, cache=cache)
    async def load() -> int:
        nonlocal version
        version += 1
        if version > 1:
            await release.wait()
        return version

    assert await load() == 1
    clock.advance(15)
    assert [await load() for _ in range(5)] == [1] * 5  # immediately, stale
    await until(lambda: version == 2)  # the refresh task started...
    for _ in range(10):
        await asyncio.sleep(0)
    assert [await load() for _ in range(5)] == [1] * 5
    assert version == 2  # ...and it is the only one
    s = cache.stats()
    assert (s.stale_served, s.loads) == (10, 1)
    release.set()
    await cache.adrain()
    assert await load() == 2
    assert version == 2
    assert cache.stats().loads == 2


async def test_hot_key_expiring_under_1000_callers_nobody_waits(
    cache: Cache, clock: FakeClock
) -> None:
    """Stale-while-revalidate: 1,000 callers of an expired hot key all get the stale
    value while the one refresh is still blocked (it is released only afterwards)."""
    release = asyncio.Event()
    loads = 0

    @cached(ttl=10, stale_while_revalidate=60, cache=cache)
    async def trending() -> list[int]:
        nonlocal loads
        loads += 1
        if loads > 1:
            await release.wait()  # the refresh cannot finish while the callers run
        return [loads]

    assert await trending() == [1]
    clock.advance(11)
    answers = await asyncio.gather(*(trending() for _ in range(1000)))
    assert answers == [[1]] * 1000  # nobody waited for the blocked refresh
    # the refresh task starts its load once it runs (after the callers' shared read)
    await until(lambda: loads == 2)
    await asyncio.sleep(0)
    assert loads == 2  # and exactly one refresh started
    release.set()
    await cache.adrain()
    assert await trending() == [2]


def test_sync_stale_while_revalidate(cache: Cache, clock: FakeClock) -> None:
    release = threading.Event()
    refreshing = threading.Event()
    version = 0

    @cached(ttl=10, stale_while_revalidate=30, cache=cache)
    def load() -> int:
        nonlocal version
        version += 1
        if version > 1:
            refreshing.set()
            assert release.wait(WAIT)
        return version

    assert load() == 1
    clock.advance(15)
    assert [load() for _ in range(5)] == [1] * 5
    assert refreshing.wait(WAIT)
    assert version == 2
    release.set()
    assert cache.drain(WAIT)
    assert load() == 2
    assert version == 2
    assert cache.stats().stale_served == 5


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_stale_if_error(cache: Cache, clock: FakeClock, mode: str) -> None:
    fail = False

    def value() -> str:
        if fail:
            raise ConnectionError("db down")
        return "good"

    if mode == "sync":

        @cached(ttl=10, stale_if_error=60, cache=cache)
        def sload() -> str:
            return value()

        async def call() -> str:
            return sload()
    else:

        @cached(ttl=10, stale_if_error=60, cache=cache)
        async def aload() -> str:
            return value()

        call = aload

    assert await call() == "good"
    fail = True
    clock.advance(20)
    assert await call() == "good"  # stale served on error
    s = cache.stats()
    assert (s.load_errors, s.stale_served) == (1, 1)
    clock.advance(50)  # 70 s after storing: beyond ttl + stale_if_error
    with pytest.raises(ConnectionError):
        await call()


def test_xfetch_early_refresh_uses_measured_delta(clock: FakeClock) -> None:
    class AlmostOne(random.Random):
        def random(self) -> float:
            return 1.0 - 1e-12  # rand = 1e-12: -ln(rand) ~ 27.6

    cache = Cache(clock=clock, rng=AlmostOne())
    version = 0

    def load() -> int:
        nonlocal version
        version += 1
        clock.advance(2.0)  # a 2 s recompute
        return version

    assert cache.get_or_load("k", load, options=CacheOptions(ttl=100)) == 1
    entry = cache.backend.get("k")
    assert entry is not None and entry[1].delta == pytest.approx(2.0)
    # 50 s before expiry: delta * beta * 27.6 = 55 s > 50 s, so XFetch refreshes early
    clock.advance(48)
    assert cache.get_or_load("k", load, options=CacheOptions(ttl=100)) == 1
    assert cache.drain(WAIT)
    assert version == 2
    s = cache.stats()
    assert (s.hits, s.loads) == (1, 2)
    assert s.load_time_total == pytest.approx(4.0)


class _AlmostOne(random.Random):
    def random(self) -> float:
        return 1.0 - 1e-12  # rand = 1e-12: -ln(rand) ~ 27.6, XFetch reaches far


def test_early_refresh_reloads_once_across_caches_sharing_a_backend(
    cache_backend: Any, clock: FakeClock
) -> None:
    """An XFetch early refresh reloads the entry (it is still fresh: the refresher
    must not take it for "already refreshed"), and two caches on one backend (two
    processes of a fleet, on Redis) that both decide to refresh load it once: the
    second waits for the first's lease and uses its value."""
    a = Cache(cache_backend, name="a", clock=clock, rng=_AlmostOne())
    b = Cache(cache_backend, name="b", clock=clock, rng=_AlmostOne())
    opts = CacheOptions(ttl=100)
    calls: list[int] = []
    started, release = threading.Event(), threading.Event()

    def load() -> int:
        calls.append(len(calls))
        if len(calls) > 1:  # the refresh: holds its lease until released
            started.set()
            assert release.wait(WAIT)
        clock.advance(2.0)  # a 2 s recompute: XFetch reaches ~55 s before expiry
        return len(calls)

    assert a.get_or_load("k", load, options=opts) == 1
    clock.advance(48)  # still fresh for 50 s, within XFetch's reach
    assert a.get_or_load("k", load, options=opts) == 1  # served; a refresh starts
    assert started.wait(WAIT)
    assert b.get_or_load("k", load, options=opts) == 1  # served; b's refresh waits
    release.set()
    assert a.drain(WAIT) and b.drain(WAIT)
    assert len(calls) == 2  # one refresh for both caches
    assert a.get("k") == 2 and b.get("k") == 2
    assert (a.stats().loads, b.stats().loads) == (2, 0)


async def test_async_early_refresh_reloads_a_fresh_entry(
    cache_backend: Any, clock: FakeClock
) -> None:
    cache = Cache(cache_backend, name="early", clock=clock, rng=_AlmostOne())
    opts = CacheOptions(ttl=100)
    version = 0

    async def load() -> int:
        nonlocal version
        version += 1
        clock.advance(2.0)
        return version

    assert await cache.aget_or_load("k", load, options=opts) == 1
    clock.advance(48)
    assert await cache.aget_or_load("k", load, options=opts) == 1  # served, refresh starts
    await cache.adrain()
    assert version == 2
    assert await cache.aget("k") == 2
    s = cache.stats()
    assert (s.hits, s.loads) == (2, 2)


# --- invalidation ---------------------------------------------------------------------


@pytest.mark.parametrize("how", ["key", "tag", "namespace", "clear"])
async def test_invalidation_during_slow_fill(cache: Cache, how: str) -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    db = {"x": "old"}

    @cached(ttl=60, cache=cache, tags=("users",), namespace="users.get")
    async def get(k: str) -> str:
        value = db[k]
        started.set()
        await release.wait()
        return value

    slow = asyncio.create_task(get("x"))
    await started.wait()
    db["x"] = "new"
    if how == "key":
        invalidate(get, "x")
    elif how == "tag":
        cache.invalidate_tags("users")
    elif how == "namespace":
        cache.invalidate_namespace("users.get")
    else:
        cache.clear()
    release.set()
    assert await slow == "old"  # its own answer; but it was not stored
    assert await get("x") == "new"
    assert await get("x") == "new"


def test_sync_invalidation_during_slow_fill(cache: Cache) -> None:
    started = threading.Event()
    release = threading.Event()
    db = {"x": "old"}

    @cached(ttl=60, cache=cache)
    def get(k: str) -> str:
        value = db[k]
        started.set()
        assert release.wait(WAIT)
        return value

    out: list[str] = []
    t = threading.Thread(target=lambda: out.append(get("x")))
    t.start()
    assert started.wait(WAIT)
    db["x"] = "new"
    assert invalidate(get, "x") is False  # nothing stored yet
    release.set()
    t.join(WAIT)
    assert out == ["old"]
    started.clear()
    release.set()
    assert get("x") == "new"


def test_tags(cache: Cache) -> None:
    calls: list[int] = []

    @cached(ttl=60, cache=cache, tags=lambda user_id: (f"user:{user_id}", "users"))
    def profile(user_id: int) -> dict[str, int]:
        calls.append(user_id)
        return {"id": user_id}

    profile(1), profile(2)
    assert cache.invalidate_tags("user:1") == 1
    profile(1), profile(2)
    assert calls == [1, 2, 1]
    assert cache.invalidate_tags("users") == 2
    profile(2)
    assert calls == [1, 2, 1, 2]
    with pytest.raises(ConfigurationError):
        cache.invalidate_tags("")


def test_namespace_and_version(cache: Cache) -> None:
    calls = 0

    def make(version: int) -> object:
        @cached(ttl=60, cache=cache, namespace="reports", version=version)
        def report(day: int) -> int:
            nonlocal calls
            calls += 1
            return day

        return report

    v1, v2 = make(1), make(2)
    assert callable(v1) and callable(v2)
    v1(1), v1(1), v2(1)
    assert calls == 2  # a new version is a new key
    assert cache.invalidate_namespace("reports", version=1) == 1
    assert cache.invalidate_namespace("reports") == 1
    v1(1), v2(1)
    assert calls == 4


# --- negative caching -----------------------------------------------------------------


def test_none_not_cached_by_default(cache: Cache) -> None:
    calls = 0

    @cached(ttl=60, cache=cache)
    def find(k: str) -> str | None:
        nonlocal calls
        calls += 1
        return None

    assert find("a") is None and find("a") is None
    assert calls == 2


async def test_negative_caching_opt_in(cache: Cache, clock: FakeClock) -> None:
    calls = 0

    class NotFound(LookupError):
        pass

    @cached(ttl=600, cache=cache, cache_none=True, negative_ttl=5)
    async def find(k: str) -> str | None:
        nonlocal calls
        calls += 1
        return None

    @cached(ttl=600, cache=cache, cache_exceptions=(NotFound,), negative_ttl=5)
    def fetch(k: str) -> str:
        nonlocal calls
        calls += 1
        if k == "boom":
            raise RuntimeError("not cached")
        raise NotFound(k)

    assert await find("a") is None and await find("a") is None
    assert calls == 1
    clock.advance(5)  # negative_ttl, not ttl
    assert await find("a") is None
    assert calls == 2
    depths = []
    for _ in range(3):
        with pytest.raises(NotFound) as info:
            fetch("x")
        depths.append(len(info.traceback))
    assert calls == 3
    assert depths[1] == depths[2]  # re-raising the cached error does not grow it
    for _ in range(2):
        with pytest.raises(RuntimeError):
            fetch("boom")
    assert calls == 5


# --- bounds, methods, config ------------------------------------------------------------


def test_lru_bound(clock: FakeClock) -> None:
    cache = Cache("memory://?max_entries=2", clock=clock)
    cache.set("a", 1)
    cache.set("b", 2)
    assert cache.get("a") == 1  # a is now the most recently used
    cache.set("c", 3)
    assert cache.get("b") is None
    assert (cache.get("a"), cache.get("c")) == (1, 3)
    assert cache.stats().evictions == 1


async def test_methods_exclude_self(cache: Cache) -> None:
    calls: list[int] = []

    class Repo:
        def __init__(self, name: str) -> None:
            self.name = name

        @cached(ttl=60, cache=cache)
        def get(self, user_id: int) -> str:
            calls.append(user_id)
            return f"user{user_id}"

        @cached(ttl=60, cache=cache)
        async def aget(self, user_id: int) -> str:
            calls.append(-user_id)
            return f"auser{user_id}"

    a, b = Repo("a"), Repo("b")
    assert a.get(1) == b.get(1) == "user1"
    assert await a.aget(1) == await b.aget(1) == "auser1"
    assert calls == [1, -1]
    assert cache_key(a.get, 1) == cache_key(Repo.get, b, 1)
    assert "Repo.get" in cache_key(a.get, 1)
    assert invalidate(a.get, 1) is True
    b.get(1)
    assert calls == [1, -1, 1]
    assert Repo.get.__name__ == "get"


def test_custom_key(cache: Cache) -> None:
    @cached(ttl=60, cache=cache, key=lambda user, **_: str(user["id"]), namespace="k")
    def f(user: dict[str, int], verbose: bool = False) -> int:
        return user["id"]

    assert f({"id": 7}) == 7
    assert cache_key(f, {"id": 7}, verbose=True) == "scalekit:cache:k:v1:{7}"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ttl": -1}, "ttl"),
        ({"ttl": "60"}, "ttl"),
        ({"ttl": 1, "lock_timeout": 0}, "lock_timeout"),
        ({"ttl": 1, "beta": -1.0}, "beta"),
        ({"ttl": 1, "cache_exceptions": (BaseException,)}, "cache_exceptions"),
        ({"ttl": 1, "tags": "users"}, "tags"),
    ],
)
def test_configuration_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        cached(**kwargs)  # type: ignore[arg-type]


def test_unsupported_backend_url() -> None:
    with pytest.raises(ConfigurationError, match="not supported"):
        Cache("memcached://localhost:11211")
    with pytest.raises(ConfigurationError, match="max_entries"):
        Cache("memory://?max_entries=0")


_TYPING_SNIPPET = """
from scalekit.cache._decorator import cached

@cached(ttl=1)
def f(a: int, b: str = "x") -> list[int]:
    return [a]

@cached(ttl=1)
async def g(a: int) -> str:
    return str(a)

class S:
    @cached(ttl=1)
    def m(self, x: int) -> float:
        return 1.0

reveal_type(f)
reveal_type(g)
reveal_type(S().m)
f("no")
"""


def test_typing_preserved(tmp_path: Path) -> None:
    target = tmp_path / "snippet.py"
    target.write_text(_TYPING_SNIPPET)
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir",
         str(tmp_path / ".mypy"), "--hide-error-context", "--no-error-summary", str(target)],
        capture_output=True, text=True, check=False, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    lines = [line.split(": ", 1)[1] for line in out.stdout.splitlines()]
    assert lines == [
        'note: Revealed type is "def (a: int, b: str =) -> list[int]"',
        'note: Revealed type is "def (a: int) -> typing.Coroutine[Any, Any, str]"',
        'note: Revealed type is "def (x: int) -> float"',
        'error: Argument 1 to "f" has incompatible type "str"; expected "int"  [arg-type]',
    ], out.stdout


def test_sync_leader_dying_releases_waiters_to_retry(clock: FakeClock) -> None:
    class Abort(BaseException):
        pass

    backend = SignallingBackend(2, clock)
    cache = Cache(backend, clock=clock)
    release = threading.Event()
    started = threading.Event()
    calls = 0

    @cached(ttl=60, cache=cache)
    def load() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            started.set()
            assert release.wait(WAIT)
            raise Abort
        return "retried"

    outcomes: list[object] = []

    def leader() -> None:
        try:
            load()
        except Abort:
            outcomes.append("aborted")

    t1 = threading.Thread(target=leader)
    t1.start()
    assert started.wait(WAIT)
    t2 = threading.Thread(target=lambda: outcomes.append(load()))
    t2.start()
    assert backend.all_missed.wait(WAIT)
    release.set()
    t1.join(WAIT)
    t2.join(WAIT)
    assert sorted(map(str, outcomes)) == ["aborted", "retried"]
    assert calls == 2


def test_an_aborted_load_gives_its_lease_back(cache_backend: Any, clock: FakeClock) -> None:
    """A load interrupted by a BaseException releases the key's lease at once: the
    next load (here another cache's refresh, which never waits for a lease) runs."""

    class Abort(BaseException):
        pass

    a = Cache(cache_backend, name="a", clock=clock)
    b = Cache(cache_backend, name="b", clock=clock)

    def abort() -> int:
        raise Abort

    with pytest.raises(Abort):
        a.get_or_load("k", abort)
    assert b.refresh("k", lambda: 2)
    assert a.get("k") == 2


async def test_a_cancelled_load_gives_its_lease_back(cache_backend: Any, clock: FakeClock) -> None:
    a = Cache(cache_backend, name="a", clock=clock)
    b = Cache(cache_backend, name="b", clock=clock)
    started = asyncio.Event()

    async def hang() -> int:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("not reached")

    reader = asyncio.create_task(a.aget_or_load("k", hang))
    await started.wait()
    (load,) = a._flights.tasks
    load.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert await b.arefresh("k", _two)
    assert await a.aget("k") == 2


async def _two() -> int:
    return 2


# --- the lean hit path of @cached -------------------------------------------------


def test_hits_exact_under_8_threads(cache: Cache) -> None:
    """Hits are counted without the cache lock; the count stays exact."""

    @cached(ttl=60, cache=cache)
    def f(x: int) -> int:
        return x

    for x in range(4):
        assert f(x) == x
    per_thread = 5_000
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait(WAIT)
        for i in range(per_thread):
            f(i % 4)
        cache.get(cache_key(f, 0))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 6)
    s = cache.stats()
    assert (s.hits, s.misses, s.loads) == (8 * (per_thread + 1), 4, 4)


def test_static_tags_checked_at_decoration() -> None:
    with pytest.raises(ConfigurationError, match="tag"):
        cached(ttl=1, tags=("ok", ""))
    with pytest.raises(ConfigurationError, match="tag"):
        cached(ttl=1, tags=(1,))  # type: ignore[arg-type]


def test_lean_hit_reraises_cached_exception_and_skips_tags(cache: Cache) -> None:
    calls: list[int] = []
    tag_calls: list[int] = []

    class NotFound(Exception):
        pass

    def tags_of(x: int) -> list[str]:
        tag_calls.append(x)
        return [f"t{x}"]

    @cached(ttl=60, cache=cache, tags=tags_of, cache_exceptions=(NotFound,))
    def f(x: int) -> int:
        calls.append(x)
        raise NotFound(x)

    with pytest.raises(NotFound) as first:
        f(1)
    with pytest.raises(NotFound) as second:
        f(1)
    if cache._in_process:
        assert second.value is first.value
    else:  # rebuilt from its class and arguments
        assert type(second.value) is NotFound
        assert second.value.args == first.value.args
    assert (calls, tag_calls) == ([1], [1])
    assert cache.invalidate_tags("t1") == 1
    with pytest.raises(NotFound):
        f(1)
    assert calls == [1, 1]


async def test_async_lean_hit_does_not_await_the_slow_path(cache: Cache) -> None:
    calls: list[int] = []

    @cached(ttl=60, cache=cache)
    async def g(x: int) -> int:
        calls.append(x)
        return x + 1

    assert await g(1) == 2
    before = cache._aserve_or_load
    cache._aserve_or_load = None  # type: ignore[assignment,method-assign]
    try:
        assert await g(1) == 2
    finally:
        cache._aserve_or_load = before  # type: ignore[method-assign]
    assert calls == [1]
    assert cache.stats().hits == 1


# --- classify_unchecked equals classify -------------------------------------------


_times = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False)
_durations = st.one_of(
    st.just(0.0),
    st.floats(min_value=0.0, max_value=1e9, allow_nan=False, allow_infinity=False),
    st.floats(min_value=0.0, max_value=1e-9, allow_nan=False),
)
_rands = st.one_of(
    st.floats(min_value=2.0**-53, max_value=1.0),
    st.just(2.0**-53),
    st.just(1.0),
    st.builds(lambda r: 1.0 - r, st.floats(min_value=0.0, max_value=1.0, exclude_max=True)),
)


@given(
    stored_at=_times,
    ttl=_durations,
    swr=_durations,
    sie=_durations,
    delta=_durations,
    offset=st.one_of(
        st.floats(min_value=-1e12, max_value=1e12, allow_nan=False),
        st.floats(min_value=-1.0, max_value=1.0),
    ),
    beta=st.one_of(st.just(0.0), st.just(1.0), st.floats(min_value=0.0, max_value=1e6)),
    rand=_rands,
)
@example(stored_at=1e9, ttl=1e-7, swr=0.0, sie=0.0, delta=1e-9, offset=0.0, beta=1.0, rand=2.0**-53)
# just inside XFetch's reach: -ln(2**-53) = 36.74 delta-betas before expiry
@example(
    stored_at=0.0, ttl=100.0, swr=0.0, sie=0.0, delta=1.0, offset=63.3, beta=1.0, rand=2.0**-53
)
@example(
    stored_at=0.0, ttl=100.0, swr=0.0, sie=0.0, delta=2.0, offset=26.6, beta=1.0, rand=2.0**-53
)
def test_classify_unchecked_equals_classify(
    stored_at: float,
    ttl: float,
    swr: float,
    sie: float,
    delta: float,
    offset: float,
    beta: float,
    rand: float,
) -> None:
    meta = EntryMeta(
        stored_at=stored_at, ttl=ttl, stale_while_revalidate=swr, stale_if_error=sie, delta=delta
    )
    now = stored_at + offset
    drawn: list[float] = []

    def draw() -> float:
        drawn.append(rand)
        return rand

    fast = classify_unchecked(meta, now, beta, draw)
    assert fast is classify(meta, now, beta=beta, rand=rand)
    assert len(drawn) <= 1
    if delta * beta == 0.0:
        assert drawn == []


# --- key building: the short paths give the keys of the general encoder -----------


_plain_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**300), max_value=2**300),
    st.floats(),
    st.uuids(),
    st.text(),
    st.text(alphabet="ab:%{} \x00\ud800é"),
)


def _old_key(kb: KeyBuilder[Any], values: list[object]) -> str:
    """The key as the encoder built it before the short paths (a copy)."""
    encoded = encode_args(values)
    tag = escape(encoded)
    if len(tag) > kb._max_length or (not tag.isascii() and len(tag.encode()) > kb._max_length):
        tag = kb._hashed(encoded)
    return f"{kb._head}{{{tag}}}"


@settings(deadline=None)  # pure CPU; a shared machine's pause is not a failure
@given(
    v=_plain_values,
    w=_plain_values,
    max_length=st.sampled_from([0, 1, 3, 200]),
    readable=st.sampled_from([0, 4]),
)
def test_key_short_paths_are_byte_identical(
    v: object, w: object, max_length: int, readable: int
) -> None:
    def one(x: object) -> None: ...

    def two(x: object, y: object = None) -> None: ...

    kb1: KeyBuilder[Any] = KeyBuilder(
        one, namespace="n:s", max_length=max_length, readable_prefix=readable
    )
    kb2: KeyBuilder[Any] = KeyBuilder(
        two, namespace="n:s", max_length=max_length, readable_prefix=readable
    )
    assert kb1(v) == kb1(x=v) == _old_key(kb1, [v])
    assert kb2(v) == _old_key(kb2, [v, None])
    assert kb2(v, w) == _old_key(kb2, [v, w])

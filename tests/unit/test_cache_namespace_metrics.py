"""Cache counters per namespace: each ``@cached`` function counts under its namespace,
direct calls under ``"-"``; exported with a ``namespace`` label (Prometheus, OTel) and
read back in ``CacheStats.namespaces``."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import threading
import uuid
import weakref
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalekit.cache import Cache, CacheOptions, CacheStats, cache_key, cached, invalidate
from scalekit.cache import _metrics as cache_metrics
from scalekit.observability import default_registry
from scalekit.testing import FakeClock

SUMMED = [f.name for f in dataclasses.fields(CacheStats) if f.name not in ("name", "namespaces")]


def _name() -> str:
    return f"ns-{uuid.uuid4().hex[:12]}"


def _native(cache: str) -> dict[str, dict[str, float]]:
    """metric -> namespace -> value, for one cache's native series."""
    out: dict[str, dict[str, float]] = {}
    for metric in default_registry.collect():
        if metric.name.startswith("scalekit_cache_"):
            for s in metric.samples:
                if s.labels.get("cache") == cache:
                    assert set(s.labels) == {"cache", "namespace"}
                    out.setdefault(metric.name, {})[s.labels["namespace"]] = s.value
    return out


def _assert_adds_up(st_: CacheStats) -> None:
    for f in SUMMED:
        parts = [getattr(p, f) for p in st_.namespaces.values()]
        assert getattr(st_, f) == pytest.approx(sum(parts)), f
    for ns, part in st_.namespaces.items():
        assert part.namespaces == {} and part.name == st_.name, ns


def test_each_cached_function_counts_under_its_namespace() -> None:
    name = _name()
    c = Cache(name=name)

    @cached(ttl=60, cache=c, namespace="users")
    def user(uid: int) -> str:
        return f"u{uid}"

    @cached(ttl=60, cache=c)
    async def feed(uid: int) -> list[int]:
        return [uid]

    @cached(ttl=60, cache=c, namespace="boom")
    def boom(x: int) -> int:
        raise ZeroDivisionError(x)

    for _ in range(4):
        assert user(1) == "u1"  # 1 miss + load, 3 hits
    assert user(2) == "u2"  # 1 miss + load

    async def reads() -> None:
        for _ in range(3):
            assert await feed(7) == [7]  # 1 miss + load, 2 hits

    asyncio.run(reads())
    for _ in range(2):
        with pytest.raises(ZeroDivisionError):
            boom(1)
    assert c.get_or_load("direct", lambda: 1) == 1
    assert c.get_or_load("direct", lambda: 1) == 1
    assert c.get("absent") is None

    st_ = c.stats()
    feed_ns = f"{feed.__module__}.{feed.__qualname__}"  # the default namespace
    assert set(st_.namespaces) == {"-", "users", feed_ns, "boom"}
    got = {ns: (p.hits, p.misses, p.loads, p.load_errors) for ns, p in st_.namespaces.items()}
    assert got == {
        "users": (3, 2, 2, 0),
        feed_ns: (2, 1, 1, 0),
        "boom": (0, 2, 2, 2),
        "-": (1, 2, 1, 0),
    }
    assert (st_.hits, st_.misses, st_.loads, st_.load_errors) == (6, 7, 6, 2)
    _assert_adds_up(st_)

    native = _native(name)
    for field, metric in [
        ("hits", "scalekit_cache_hits_total"),
        ("misses", "scalekit_cache_misses_total"),
        ("loads", "scalekit_cache_loads_total"),
        ("load_errors", "scalekit_cache_load_errors_total"),
    ]:
        assert native[metric] == {ns: getattr(p, field) for ns, p in st_.namespaces.items()}
    # the cache-wide figures no call owns: under "-" only
    assert set(native["scalekit_cache_backend_errors_total"]) == {"-"}
    assert set(native["scalekit_cache_decode_errors_total"]) == {"-"}
    assert set(native["scalekit_cache_invalidations_deferred_total"]) == set(st_.namespaces)


def test_stale_served_refreshes_and_stale_if_error_count_on_the_namespace() -> None:
    clock = FakeClock()
    c = Cache(name=_name(), clock=clock)
    fail = False

    @cached(ttl=10, cache=c, namespace="swr", stale_while_revalidate=10, beta=0)
    def swr(x: int) -> int:
        return x

    @cached(ttl=10, cache=c, namespace="sie", stale_if_error=100, beta=0)
    def sie(x: int) -> int:
        if fail:
            raise ConnectionError("db down")
        return x

    assert swr(1) == 1 and sie(1) == 1
    clock.advance(15)
    assert swr(1) == 1  # stale served, background refresh (a load on "swr")
    assert c.drain(5)
    fail = True
    assert sie(1) == 1  # the load fails: the stale value is served
    parts = c.stats().namespaces
    assert (parts["swr"].stale_served, parts["swr"].loads) == (1, 2)
    assert (parts["sie"].stale_served, parts["sie"].loads, parts["sie"].load_errors) == (1, 2, 1)
    assert parts["sie"].misses == 2
    assert parts["-"].stale_served == 0 and parts["-"].loads == 0


def test_coalesced_waiters_count_on_the_namespace() -> None:
    c = Cache(name=_name())
    started, release = threading.Event(), threading.Event()

    @cached(ttl=60, cache=c, namespace="slow")
    def slow(x: int) -> int:
        started.set()
        release.wait(5)
        return x

    results: list[int] = []
    leader = threading.Thread(target=lambda: results.append(slow(3)))
    leader.start()
    assert started.wait(5)
    waiters = [threading.Thread(target=lambda: results.append(slow(3))) for _ in range(3)]
    for t in waiters:
        t.start()
    while c.stats().namespaces["slow"].coalesced < 3:
        threading.Event().wait(0.001)
    release.set()
    for t in [leader, *waiters]:
        t.join(5)
    assert results == [3] * 4
    st_ = c.stats()
    assert (st_.namespaces["slow"].coalesced, st_.namespaces["slow"].loads) == (3, 1)
    assert st_.namespaces["-"].coalesced == 0


async def test_async_coalesced_waiters_count_on_the_namespace() -> None:
    c = Cache(name=_name())
    gate = asyncio.Event()

    @cached(ttl=60, cache=c, namespace="aslow")
    async def aslow(x: int) -> int:
        await gate.wait()
        return x

    tasks = [asyncio.create_task(aslow(1)) for _ in range(4)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*tasks) == [1] * 4
    part = c.stats().namespaces["aslow"]
    assert (part.coalesced, part.loads, part.misses) == (3, 1, 4)


def test_invalidations_count_under_the_namespace_they_cover() -> None:
    c = Cache(name=_name())

    @cached(ttl=60, cache=c, namespace="a:b/c")  # escaped in keys: parsed back here
    def f(x: int) -> int:
        return x

    @cached(ttl=60, cache=c, namespace="g", tags=["t"])
    def g(x: int) -> int:
        return x

    f(1)
    g(1)
    assert invalidate(f, 1) is True
    c.delete(cache_key(g, 1))  # a direct delete of a @cached key: g's
    assert c.invalidate_namespace("a:b/c") == 0  # nothing left
    c.invalidate_namespace("g", version=1)
    c.invalidate_namespace("never-declared")  # not a label: counted under "-"
    c.invalidate_tags("t")
    c.delete("plain")
    c.delete(f"{c.prefix}:forged:v1:{{x}}")  # looks like a @cached key: not a namespace
    c.clear()
    parts = c.stats().namespaces
    assert set(parts) == {"-", "a:b/c", "g"}
    assert (parts["a:b/c"].invalidations, parts["g"].invalidations) == (2, 2)
    assert parts["-"].invalidations == 5
    assert "forged" not in _native(c.name)["scalekit_cache_invalidations_total"]


def test_a_user_key_is_never_a_label() -> None:
    name = _name()
    c = Cache(name=name)

    @cached(ttl=60, cache=c, namespace="lookup")
    def lookup(email: str) -> str:
        return email.upper()

    secret = "alice@example.com"
    lookup(secret)
    lookup(secret)
    c.get_or_load(f"user:{secret}", lambda: 1)
    c.delete(f"{c.prefix}:{secret}:v1:{{x}}")
    for metric, by_ns in _native(name).items():
        assert set(by_ns) <= {"-", "lookup"}, metric
        assert not any(secret in ns for ns in by_ns)


def test_namespaces_are_bounded_per_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_metrics, "MAX_NAMESPACES", 3)
    c = Cache(name=_name())
    fns = []
    for i in range(6):

        def make(i: int = i) -> Any:
            return cached(ttl=60, cache=c, namespace=f"fn{i}")(lambda x: x + i)

        fns.append(make())
    for fn in fns:
        assert fn(1) == fn(1)
    parts = c.stats().namespaces
    assert set(parts) == {"-", "fn0", "fn1", "fn2", "_other"}
    assert parts["_other"].hits == 3 and parts["_other"].misses == 3
    assert set(_native(c.name)["scalekit_cache_hits_total"]) == set(parts)


def test_a_long_namespace_is_cut_in_the_label_only() -> None:
    c = Cache(name=_name())
    long = "n" * 300

    @cached(ttl=60, cache=c, namespace=long)
    def f(x: int) -> int:
        return x

    f(1)
    f(1)
    assert c.stats().namespaces[long].hits == 1
    assert _native(c.name)["scalekit_cache_hits_total"][long[:128]] == 1


def test_factory_made_functions_share_their_namespace() -> None:
    c = Cache(name=_name())

    def factory() -> Any:
        @cached(ttl=60, cache=c)
        def inner(x: int) -> int:
            return x

        return inner

    a, b = factory(), factory()
    a(1)
    b(1)
    b(1)
    parts = c.stats().namespaces
    assert len(parts) == 2  # "-" and the one shared namespace: bounded by code
    [ns] = set(parts) - {"-"}
    assert ns.endswith("factory.<locals>.inner") and parts[ns].hits == 2


def test_a_decorated_cache_is_still_collected() -> None:
    c = Cache(name=_name())

    @cached(ttl=60, cache=c, namespace="gc")
    def f(x: int) -> int:
        return x

    f(1)
    ref = weakref.ref(c)
    name = c.name
    del c, f
    gc.collect()
    assert ref() is None
    # what it counted stays in the exported series
    assert _native(name)["scalekit_cache_misses_total"]["gc"] == 1


@settings(max_examples=40, deadline=None)
@given(
    calls=st.lists(
        st.tuples(st.sampled_from(["p", "q", "-"]), st.integers(0, 3), st.booleans()),
        max_size=40,
    )
)
def test_the_breakdown_adds_up_to_the_totals(calls: list[tuple[str, int, bool]]) -> None:
    clock = FakeClock()
    # one name for every example: the registry's series stay few (each instance
    # still counts apart in stats())
    c = Cache(name="ns-prop", clock=clock, options=CacheOptions(ttl=5, stale_while_revalidate=5))
    fns = {ns: cached(ttl=5, cache=c, namespace=ns, beta=0)(lambda x: x) for ns in ("p", "q")}
    reads = {"p": 0, "q": 0, "-": 0}
    for ns, x, tick in calls:
        if tick:
            clock.advance(3)
        if ns == "-":
            assert c.get_or_load(f"k{x}", lambda x=x: x) == x
        else:
            assert fns[ns](x) == x
        reads[ns] += 1
    c.drain(5)
    st_ = c.stats()
    _assert_adds_up(st_)
    for ns, n in reads.items():
        part = st_.namespaces.get(ns)
        served = 0 if part is None else part.hits + part.misses + part.stale_served
        assert served == n, ns


# -- the exporters read the namespace label -------------------------------------------------


def _two_namespaces() -> tuple[Cache, dict[str, tuple[int, int]]]:
    """A cache with two @cached functions and direct calls; (hits, misses) by namespace."""
    c = Cache(name=_name())

    @cached(ttl=60, cache=c, namespace="users")
    def user(uid: int) -> int:
        return uid

    @cached(ttl=60, cache=c, namespace="teams")
    def team(tid: int) -> int:
        return tid

    for _ in range(3):
        user(1)
    team(1)
    team(2)
    c.get("nothing")
    return c, {"users": (2, 1), "teams": (0, 2), "-": (0, 1)}


def test_prometheus_exposition_carries_the_namespace() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from scalekit.observability.prometheus import exposition

    c, expected = _two_namespaces()
    body, _ = exposition()  # the default registry, where the cache reports
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    got: dict[str, dict[str, float]] = {"hits": {}, "misses": {}}
    for what in got:
        fam = families[f"scalekit_cache_{what}"]
        assert fam.type == "counter"
        for s in fam.samples:
            if s.labels.get("cache") == c.name:
                assert s.name == f"scalekit_cache_{what}_total"
                assert set(s.labels) == {"cache", "namespace"}
                got[what][s.labels["namespace"]] = s.value
    assert got["hits"] == {ns: h for ns, (h, _) in expected.items()}
    assert got["misses"] == {ns: m for ns, (_, m) in expected.items()}
    # and the Python breakdown says the same
    parts = c.stats().namespaces
    assert {ns: (p.hits, p.misses) for ns, p in parts.items()} == expected


def test_otel_reads_the_namespace_label() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from scalekit.observability.otel import instrument

    c, expected = _two_namespaces()
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    bridge = instrument(meter_provider=provider)  # the default registry
    try:
        data = reader.get_metrics_data()
        assert data is not None
        got: dict[str, dict[str, float]] = {"hits": {}, "misses": {}}
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    what = m.name.removeprefix("scalekit_cache_")
                    if what not in got:
                        continue
                    for p in m.data.data_points:
                        attrs = dict(p.attributes or {})
                        if attrs.get("cache") == c.name:
                            assert set(attrs) == {"cache", "namespace"}
                            got[what][str(attrs["namespace"])] = p.value  # type: ignore[union-attr]
        assert got["hits"] == {ns: h for ns, (h, _) in expected.items()}
        assert got["misses"] == {ns: m for ns, (_, m) in expected.items()}
    finally:
        bridge.close()
        provider.shutdown()
    assert bridge.sync not in default_registry._watchers

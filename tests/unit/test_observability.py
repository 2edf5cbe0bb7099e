"""The metrics registry, the stats() adapter, the exporters and the state-change events."""

from __future__ import annotations

import itertools
import logging
import math
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scalekit import CircuitOpenError, ConfigurationError, RateLimiter
from scalekit.cache import Cache
from scalekit.observability import (
    EVENTS,
    SHAPES,
    Counter,
    Histogram,
    Registry,
    breaker_listener,
    log_event,
)
from scalekit.observability._metrics import OVERFLOW, _check_name, _count_of
from scalekit.pools import PoolStats
from scalekit.resilience import Bulkhead, CircuitBreaker, RetryBudget
from scalekit.sampling import Gate, Keyed, Pipeline
from scalekit.testing import FakeClock


def by_name(registry: Registry) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for m in registry.collect():
        out[m.name] = {tuple(sorted(s.labels.items())): s.value for s in m.samples}
    return out


def fail() -> None:
    raise ConnectionError


# -- the types -----------------------------------------------------------------------


def test_count_of_reads_itertools_count() -> None:
    c = itertools.count()
    assert _count_of(c) == 0
    for _ in range(12345):
        next(c)
    assert _count_of(c) == 12345
    big = itertools.count(2**70)
    next(big)
    assert _count_of(big) == 2**70 + 1


def test_counter_inc_and_add() -> None:
    c = Counter()
    for _ in range(10):
        c.inc()
    c.add(2.5)
    assert c.value == 12.5
    for bad in (-1, math.nan, math.inf, "1"):
        with pytest.raises(ConfigurationError):
            c.add(bad)  # type: ignore[arg-type]
    assert c.value == 12.5


def test_counter_loses_nothing_across_threads() -> None:
    c = Counter()

    def work() -> None:
        for _ in range(20_000):
            c.inc()
        for _ in range(1_000):
            c.add(1)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert c.value == 4 * 21_000


@given(st.lists(st.floats(min_value=-1e6, max_value=1e6) | st.just(math.nan), max_size=60))
def test_histogram_buckets_are_cumulative_le(values: list[float]) -> None:
    bounds = (0.0, 1.0, 10.0)
    h = Histogram(bounds)
    for v in values:
        h.observe(v)
    kept = [v for v in values if v == v]
    buckets = h.buckets()
    assert [b for b, _ in buckets] == [0.0, 1.0, 10.0, math.inf]
    for bound, n in buckets:
        assert n == sum(1 for v in kept if v <= bound)
    assert h.count == len(kept)
    assert h.sum == pytest.approx(sum(kept))


def test_histogram_refuses_bad_buckets() -> None:
    for bad in ((), (1.0, 1.0), (2.0, 1.0), (1.0, math.inf)):
        with pytest.raises(ConfigurationError):
            Histogram(bad)


def test_family_labels_and_idempotent_definition() -> None:
    r = Registry()
    fam = r.counter("scalekit_x_total", "x", labels=("limiter",))
    assert r.counter("scalekit_x_total", "x", labels=("limiter",)) is fam
    a = fam.labels("a")
    assert fam.labels(limiter="a") is a
    a.inc()
    fam.labels("b").add(3)
    assert by_name(r)["scalekit_x_total"] == {(("limiter", "a"),): 1, (("limiter", "b"),): 3}
    with pytest.raises(ConfigurationError, match="already a counter"):
        r.counter("scalekit_x_total", "x", labels=("cache",))
    with pytest.raises(ConfigurationError):
        r.gauge("scalekit_x_total", "x")
    with pytest.raises(ConfigurationError):
        fam.labels("a", "b")
    with pytest.raises(ConfigurationError):
        fam.labels(cache="a")
    for bad in ("", "x" * 129, 5):
        with pytest.raises(ConfigurationError):
            fam.labels(bad)  # type: ignore[arg-type]


def test_names_and_units_are_checked() -> None:
    r = Registry()
    for name, kind in (("x", "counter"), ("x_total", "gauge"), ("1x", "gauge"), ("__x", "gauge")):
        with pytest.raises(ConfigurationError):
            _check_name(name, kind, "")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="_seconds"):
        r.counter("scalekit_wait_total", "w", unit="seconds")
    with pytest.raises(ConfigurationError):
        r.gauge("scalekit_g", "g", labels=("le",))
    with pytest.raises(ConfigurationError):
        r.gauge("scalekit_g", "g", labels=("a", "a"))
    r.counter("scalekit_wait_seconds_total", "w", unit="seconds").labels().add(0.5)


def test_every_shape_field_has_a_conventional_name() -> None:
    for kind, shape in SHAPES.items():
        for f in shape.fields:
            assert f.metric.startswith(f"scalekit_{kind}_"), f.metric
            _check_name(f.metric, f.kind, f.unit)


def test_cardinality_is_bounded() -> None:
    r = Registry(max_series=3)
    fam = r.counter("scalekit_y_total", "y", labels=("name",))
    for i in range(10):
        fam.labels(f"n{i}").inc()
    series = by_name(r)["scalekit_y_total"]
    assert len(series) == 4
    assert series[(("name", OVERFLOW),)] == 7
    assert fam.overflowed == 7


# -- sources: the primitives' stats() as they are today ----------------------------------


def test_sources_export_the_primitives_stats() -> None:
    r = Registry()
    clock = FakeClock()
    limiter = RateLimiter("memory://", "2/minute", clock=clock, name="chat")
    for _ in range(3):
        limiter.hit("user:alice")
    cache = Cache(name="feed", clock=clock)
    cache.get_or_load("k", lambda: 1)
    cache.get_or_load("k", lambda: 1)
    breaker = CircuitBreaker("payments", record=ConnectionError, failure_threshold=1, clock=clock)
    with pytest.raises(ConnectionError):
        breaker.call(fail)
    bulk = Bulkhead(max_concurrent=2)
    budget = RetryBudget()
    pipe = Pipeline(Gate("long", lambda m: len(m) >= 3), Keyed(1.0, key=lambda m: m))
    for m in ("a", "abcd", "abcde"):
        pipe.decide(m)
    pool = PoolStats(
        name="db", kind="postgres", max_size=10, size=4, idle=1, in_use=3, waiters=0,
        acquired=7, timeouts=0, wait_seconds_total=0.25, wait_seconds_max=0.1,
        recycled=0, ping_failures=0, retries=0,
    )  # fmt: skip

    r.register_source("ratelimit", limiter.stats, name="chat")
    r.register_source("cache", cache.stats)
    r.register_source("breaker", breaker.snapshot)
    r.register_source("bulkhead", bulk.stats, name="reports")
    r.register_source("retry", budget.stats, name="payments")
    r.register_source("sampling", pipe.stats)
    r.register_source("pool", lambda: [pool])
    got = by_name(r)
    assert got["scalekit_ratelimit_allowed_total"] == {(("limiter", "chat"),): 2}
    assert got["scalekit_ratelimit_denied_total"] == {(("limiter", "chat"),): 1}
    assert got["scalekit_cache_hits_total"] == {(("cache", "feed"),): 1}
    assert got["scalekit_cache_misses_total"] == {(("cache", "feed"),): 1}
    assert got["scalekit_breaker_state"][(("breaker", "payments"), ("state", "open"))] == 1
    assert got["scalekit_breaker_state"][(("breaker", "payments"), ("state", "closed"))] == 0
    assert got["scalekit_breaker_trips_total"] == {(("breaker", "payments"),): 1}
    assert got["scalekit_bulkhead_admitted_total"] == {(("bulkhead", "reports"),): 0}
    assert got["scalekit_retry_calls_total"] == {(("budget", "payments"),): 0}
    assert got["scalekit_sampling_considered_total"] == {(("pipeline", "sampling"),): 3}
    assert got["scalekit_sampling_skipped_total"] == {
        (("pipeline", "sampling"), ("stage", "long")): 1,
        (("pipeline", "sampling"), ("stage", "keyed")): 0,
    }
    key = (("kind", "postgres"), ("pool", "db"))
    assert got["scalekit_pool_in_use_connections"] == {key: 3}
    assert got["scalekit_pool_wait_seconds_total"] == {key: 0.25}


def test_a_failing_or_dead_source_reads_as_empty() -> None:
    r = Registry()

    def broken() -> object:
        raise RuntimeError("boom")

    r.register_source("ratelimit", broken, name="x")
    cache = Cache(name="gone")
    r.register_source("cache", cache.stats)
    assert "scalekit_cache_hits_total" in by_name(r)
    del cache
    assert by_name(r) == {}
    r.unregister_source("ratelimit", "x")
    r.unregister_source("cache", "gone")
    assert r.read_sources() == []


def test_register_source_refuses_bad_arguments() -> None:
    r = Registry()
    with pytest.raises(ConfigurationError, match="kind"):
        r.register_source("nope", dict)
    with pytest.raises(ConfigurationError):
        r.register_source("cache", 5)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        r.register_source("cache", dict, name="")


def test_breaker_registry_snapshot_is_one_source_of_many_series() -> None:
    from scalekit.resilience import BreakerRegistry

    r = Registry()
    reg = BreakerRegistry()
    a = reg.register(CircuitBreaker("a", record=ValueError))
    b = reg.register(CircuitBreaker("b", record=ValueError))
    b.open()
    r.register_source("breaker", reg.snapshot)
    states = by_name(r)["scalekit_breaker_state"]
    assert states[(("breaker", "a"), ("state", "closed"))] == 1
    assert states[(("breaker", "b"), ("state", "forced_open"))] == 1
    assert a is not None


# -- exporters -----------------------------------------------------------------------


def test_prometheus_exposition_parses_back() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from scalekit.observability.prometheus import exposition

    r = Registry()
    r.counter("scalekit_ratelimit_allowed_total", "Hits allowed.", labels=("limiter",)).labels(
        "chat"
    ).add(5)
    r.gauge("scalekit_pool_waiters", "Waiting.", labels=("pool",)).labels("db").set(2)
    h = r.histogram(
        "scalekit_pool_acquire_seconds", "Acquire.", unit="seconds", buckets=(0.1, 1.0)
    ).labels()
    for v in (0.05, 0.5, 3.0):
        h.observe(v)
    cache = Cache(name="feed")
    cache.get_or_load("k", lambda: 1)
    r.register_source("cache", cache.stats)
    body, content_type = exposition(r)
    assert content_type.startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    allowed = families["scalekit_ratelimit_allowed"]
    assert allowed.type == "counter"
    [s] = allowed.samples
    assert (s.name, s.labels, s.value) == (
        "scalekit_ratelimit_allowed_total",
        {"limiter": "chat"},
        5,
    )
    assert families["scalekit_pool_waiters"].samples[0].value == 2
    acquire = families["scalekit_pool_acquire_seconds"].samples
    hist = {(s.name, s.labels.get("le")): s.value for s in acquire}
    assert hist[("scalekit_pool_acquire_seconds_bucket", "0.1")] == 1
    assert hist[("scalekit_pool_acquire_seconds_bucket", "1.0")] == 2
    assert hist[("scalekit_pool_acquire_seconds_bucket", "+Inf")] == 3
    assert hist[("scalekit_pool_acquire_seconds_count", None)] == 3
    assert hist[("scalekit_pool_acquire_seconds_sum", None)] == pytest.approx(3.55)
    miss = families["scalekit_cache_misses"].samples[0]
    assert (miss.labels, miss.value) == ({"cache": "feed"}, 1)
    assert "scalekit_cache_load_seconds" in families


def test_otel_observable_instruments_read_the_registry() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from scalekit.observability.otel import instrument

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    r = Registry()
    allowed = r.counter("scalekit_ratelimit_allowed_total", "Allowed.", labels=("limiter",))
    allowed.labels("chat").add(4)
    instrument(r, meter_provider=provider)
    # a family and a source that appear after instrument() are exported too
    r.gauge("scalekit_pool_waiters", "Waiting.").labels().set(3)
    cache = Cache(name="feed")
    cache.get_or_load("k", lambda: 1)
    r.register_source("cache", cache.stats)

    def points() -> dict[str, list[tuple[dict[str, object], float]]]:
        data = reader.get_metrics_data()
        assert data is not None
        out: dict[str, list[tuple[dict[str, object], float]]] = {}
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    out[m.name] = [
                        (dict(p.attributes or {}), p.value)  # type: ignore[union-attr]
                        for p in m.data.data_points
                    ]
        return out

    got = points()
    assert got["scalekit_ratelimit_allowed"] == [({"limiter": "chat"}, 4)]
    assert got["scalekit_pool_waiters"] == [({}, 3)]
    assert got["scalekit_cache_misses"] == [({"cache": "feed"}, 1)]
    provider.shutdown()


# -- events --------------------------------------------------------------------------


def test_log_event_has_a_stable_event_field(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="scalekit.events")
    log_event("backend.down", backend="redis", error="timeout", name="shadowed")
    [rec] = caplog.records
    assert rec.event == "backend.down"  # type: ignore[attr-defined]
    assert rec.backend == "redis"  # type: ignore[attr-defined]
    assert rec.event_name == "shadowed"  # type: ignore[attr-defined]
    assert rec.levelno == logging.ERROR
    assert rec.getMessage().startswith("backend.down backend=redis")
    with pytest.raises(ValueError, match="unknown event"):
        log_event("backend.sad")


def test_breakers_log_their_transitions_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="scalekit.events")
    clock = FakeClock()
    breaker = CircuitBreaker(
        "payments", record=ConnectionError, failure_threshold=1, open_duration=10, clock=clock
    )
    for _ in range(3):
        with pytest.raises((ConnectionError, CircuitOpenError)):
            breaker.call(fail)
    clock.advance(10)
    breaker.call(lambda: None)
    events = [r.event for r in caplog.records]  # type: ignore[attr-defined]
    assert events == ["breaker.opened", "breaker.half_opened", "breaker.closed"]
    assert set(events) <= EVENTS
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.INFO, logging.INFO]


def test_breaker_listener_is_deprecated_and_does_not_log_twice(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scalekit.observability import _events

    monkeypatch.setattr(_events, "_warned", [])
    caplog.set_level(logging.INFO, logger="scalekit.events")
    breaker = CircuitBreaker("payments", record=ConnectionError, failure_threshold=1)
    breaker.add_listener(breaker_listener)
    warns = pytest.warns(DeprecationWarning, match="breaker_listener is deprecated")
    with warns, pytest.raises(ConnectionError):
        breaker.call(fail)
    with pytest.raises(CircuitOpenError):
        breaker.call(fail)  # no second warning (pytest's filter would raise it as an error)
    assert [r.event for r in caplog.records] == ["breaker.opened"]  # type: ignore[attr-defined]


# -- the public surface and the optional extras ----------------------------------------


def test_all_is_importable() -> None:
    from scalekit import capacity, observability

    for module in (observability, capacity):
        for name in module.__all__:
            assert hasattr(module, name), name
        assert sorted(module.__all__) == module.__all__


def test_imports_without_the_extras() -> None:
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import asyncio, sys
        for m in ("redis", "asyncpg", "prometheus_client", "opentelemetry", "pydantic"):
            sys.modules[m] = None        # as if the extra were not installed
        import scalekit.observability as o
        from scalekit.errors import MissingDependency
        r = o.Registry()
        r.counter("scalekit_x_total", "x").labels().inc()
        assert r.collect()[0].samples[0].value == 1
        report = asyncio.run(o.health_report(o.RedisProbe("redis://127.0.0.1:1"), registry=r))
        assert "pip install 'scalekit-primitives[redis]'" in report.check("redis").error
        for module, extra in (("scalekit.observability.prometheus", "prometheus"),
                              ("scalekit.observability.otel", "otel"),
                              ("scalekit.capacity", "capacity")):
            try:
                __import__(module)
            except MissingDependency as exc:
                assert f"scalekit-primitives[{extra}]" in str(exc), exc
            else:
                raise AssertionError(module)
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_importing_observability_loads_no_driver_or_exporter() -> None:
    import subprocess
    import sys

    code = (
        "import sys, scalekit.observability\n"
        "loaded = {'redis', 'asyncpg', 'prometheus_client', 'opentelemetry', 'pydantic'}"
        " & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_mapping_of_stats_dicts_is_one_series_each() -> None:
    r = Registry()
    a = RateLimiter("memory://", "1/minute", name="a")
    b = RateLimiter("memory://", "1/minute", name="b")
    a.hit("k")
    a.hit("k")
    r.register_source("ratelimit", lambda: {"a": a.stats(), "b": b.stats()}, name="all")
    assert by_name(r)["scalekit_ratelimit_denied_total"] == {
        (("limiter", "a"),): 1,
        (("limiter", "b"),): 0,
    }


def test_a_native_family_wins_over_a_source_of_another_shape() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from scalekit.observability.prometheus import exposition

    r = Registry()
    native = r.counter("scalekit_cache_hits_total", "Hits.", labels=("cache", "namespace"))
    native.labels("feed", "q").add(2)
    cache = Cache(name="feed")
    r.register_source("cache", cache.stats)
    families = {f.name: f for f in text_string_to_metric_families(exposition(r)[0].decode())}
    [sample] = families["scalekit_cache_hits"].samples
    assert sample.labels == {"cache": "feed", "namespace": "q"} and sample.value == 2
    assert "scalekit_cache_misses" in families  # the source's other fields still export

"""The primitives report into the metrics registry natively (issue 14).

Each primitive takes children of its own in ``default_registry`` at construction
(``Family.attach``) and its ``stats()`` reads them; the exported series sums the
children of one label set and keeps what collected primitives counted.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import math

import pytest

from scalekit.errors import BulkheadFull, CircuitOpenError, ConfigurationError, DeadlineExceeded
from scalekit.observability import Registry, default_registry
from scalekit.resilience import Bulkhead, CircuitBreaker, RetryBudget, timeout
from scalekit.sampling import Fixed, Gate, Keyed, Pipeline
from scalekit.testing import FakeClock

_ids = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}-{id(object()):x}"


def series(name: str, registry: Registry = default_registry) -> dict[tuple[str, ...], float]:
    for m in registry.collect():
        if m.name == name:
            return {tuple(s.labels[n] for n in m.labelnames): s.value for s in m.samples}
    return {}


def fail() -> None:
    raise ConnectionError


# -- the registry: children owned by one primitive each -----------------------------------


class Owner:
    pass


def test_attached_children_count_apart_and_export_together() -> None:
    r = Registry()
    fam = r.counter("x_total", "x", labels=("name",))
    a, b = Owner(), Owner()
    ca, cb = fam.attach(a, "n"), fam.attach(b, "n")
    ca.inc()
    ca.inc()
    next(cb.tick)
    assert (ca.value, cb.value) == (2, 1)
    assert series("x_total", r) == {("n",): 3}
    del a
    gc.collect()
    # the collected owner's count stays in the series: a counter never goes down
    assert series("x_total", r) == {("n",): 3}
    cb.inc()
    assert series("x_total", r) == {("n",): 4}


def test_a_gauge_of_a_collected_owner_leaves_the_series() -> None:
    r = Registry()
    fam = r.gauge("g", "g", labels=("name",))
    a, b = Owner(), Owner()
    fam.attach(a, "n").set(2)
    fam.attach(b, "n").set_function(lambda: 5)
    assert series("g", r) == {("n",): 7}
    del a
    gc.collect()
    assert series("g", r) == {("n",): 5}


def test_attached_histograms_merge_and_survive_their_owner() -> None:
    r = Registry()
    fam = r.histogram("h_seconds", "h", labels=("name",), unit="seconds", buckets=(1, 2))
    a, b = Owner(), Owner()
    fam.attach(a, "n").observe(0.5)
    fam.attach(b, "n").observe(1.5)
    del a
    for _ in range(20):  # enough attaches to prune at 8 and 16
        fam.attach(Owner(), "n")
    gc.collect()
    (m,) = [m for m in r.collect() if m.name == "h_seconds"]
    (s,) = m.samples
    assert s.value == 2.0
    assert s.buckets == ((1.0, 1), (2.0, 2), (math.inf, 2))


def test_a_callback_gauge_that_raises_reads_nan() -> None:
    r = Registry()
    g = r.gauge("g", "g").labels()

    def boom() -> float:
        raise RuntimeError

    g.set_function(boom)
    assert math.isnan(g.value)


def test_attach_respects_max_series() -> None:
    r = Registry(max_series=2)
    fam = r.counter("c_total", "c", labels=("name",))
    keep = [Owner() for _ in range(3)]
    for i, o in enumerate(keep):
        fam.attach(o, f"n{i}").inc()
    assert series("c_total", r) == {("n0",): 1, ("n1",): 1, ("_other",): 1}
    assert fam.overflowed == 1


def test_attach_to_an_owner_without_weak_references() -> None:
    r = Registry()
    fam = r.counter("c_total", "c", labels=("name",))
    fam.attach(len, "builtin").inc()
    assert series("c_total", r) == {("builtin",): 1}


# -- the breaker -----------------------------------------------------------------------------


def test_breaker_counts_natively_and_two_breakers_named_alike_stay_apart() -> None:
    name = unique("payments")
    clock = FakeClock()
    b1 = CircuitBreaker(name, record=ConnectionError, failure_threshold=2, clock=clock)
    b2 = CircuitBreaker(name, record=ConnectionError, failure_threshold=2, clock=clock)
    b1.call(lambda: None)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            b1.call(fail)
    with pytest.raises(CircuitOpenError):
        b1.call(fail)
    b2.call(lambda: None)
    s1, s2 = b1.snapshot(), b2.snapshot()
    assert (s1.calls, s1.failures, s1.successes, s1.rejected) == (3, 2, 1, 1)
    assert (s2.calls, s2.failures, s2.rejected) == (1, 0, 0)
    assert series("scalekit_breaker_calls_total")[(name,)] == 4
    assert series("scalekit_breaker_failures_total")[(name,)] == 2
    assert series("scalekit_breaker_rejected_total")[(name,)] == 1
    assert series("scalekit_breaker_transitions_total")[(name, "open")] == 1
    state = series("scalekit_breaker_state")
    # one of the two is open, the other closed: the series sums the breakers per state
    assert state[(name, "open")] == 1 and state[(name, "closed")] == 1
    assert state[(name, "half_open")] == 0


def test_the_breaker_fast_path_counts_each_call() -> None:
    name = unique("fast")
    breaker = CircuitBreaker(name, record=ConnectionError)

    @breaker
    def f(x: int) -> int:
        return x

    for i in range(50):
        f(i)
    assert breaker.snapshot().calls == 50
    assert series("scalekit_breaker_calls_total")[(name,)] == 50


async def test_the_async_breaker_counts() -> None:
    name = unique("async")
    breaker = CircuitBreaker(name, record=ConnectionError, failure_threshold=1)

    @breaker
    async def f() -> None:
        raise ConnectionError

    with pytest.raises(ConnectionError):
        await f()
    with pytest.raises(CircuitOpenError):
        await f()
    snap = breaker.snapshot()
    assert (snap.calls, snap.failures, snap.rejected) == (1, 1, 1)


# -- bulkhead, retry budget, timeout ------------------------------------------------------------


async def test_bulkhead_in_use_and_rejections() -> None:
    name = unique("reports")
    bulk = Bulkhead(name, max_concurrent=1)
    async with bulk:
        assert series("scalekit_bulkhead_running")[(name,)] == 1
        with pytest.raises(BulkheadFull):
            await bulk.aacquire()
    assert series("scalekit_bulkhead_running")[(name,)] == 0
    assert series("scalekit_bulkhead_rejected_total")[(name,)] == 1
    assert series("scalekit_bulkhead_admitted_total")[(name,)] == 1
    st = bulk.stats()
    assert (st.running, st.admitted, st.rejected) == (0, 1, 1)


def test_retry_budget_exhaustion_is_counted() -> None:
    name = unique("budget")
    clock = FakeClock()
    budget = RetryBudget(0.0, window=10, min_per_second=0.1, clock=clock, name=name)
    budget.record_call()
    assert budget.try_retry() is True
    assert budget.try_retry() is False
    st = budget.stats()
    assert (st.name, st.calls, st.retries, st.refused) == (name, 1, 1, 1)
    assert series("scalekit_retry_refused_total")[(name,)] == 1
    assert series("scalekit_retry_retries_total")[(name,)] == 1


async def test_timeouts_are_counted_per_function() -> None:
    @timeout(0.01)
    async def slow_call() -> None:
        await asyncio.Event().wait()

    key = (slow_call.__qualname__,)
    before = series("scalekit_timeout_expired_total").get(key, 0)
    with pytest.raises(DeadlineExceeded):
        await slow_call()
    assert series("scalekit_timeout_expired_total")[key] == before + 1


# -- sampling ----------------------------------------------------------------------------------


@pytest.mark.parametrize("tail", ["keyed", "fixed", "none"])
def test_sampling_decisions_per_stage(tail: str) -> None:
    name = unique("extract")
    stages: list[object] = [Gate("long", lambda m: len(m) >= 3)]
    if tail == "keyed":
        stages.append(Keyed(0.5, key=lambda m: m, name="keyed"))
    elif tail == "fixed":
        stages.append(Fixed(0.5, name="fixed", rng=itertools.cycle([0.1, 0.9]).__next__))
    pipe: Pipeline[str] = Pipeline(*stages, name=name)  # type: ignore[arg-type]
    items = ["a", "bb"] + [f"item-{i}" for i in range(40)]
    kept = sum(pipe.decide(m).sampled for m in items)
    st = pipe.stats()
    assert st.name == name and st.sampled == kept and st.considered == len(items)
    assert st.skipped["long"] == 2
    assert series("scalekit_sampling_sampled_total")[(name,)] == kept
    skipped = series("scalekit_sampling_skipped_total")
    assert skipped[(name, "long")] == 2
    assert sum(v for k, v in skipped.items() if k[0] == name) == len(items) - kept


# -- backend.down / backend.up: once per outage episode -------------------------------------


def test_backend_guard_logs_one_down_and_one_up_per_episode(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from scalekit.backends._guard import BackendGuard
    from scalekit.errors import BackendError

    caplog.set_level(logging.INFO, logger="scalekit.events")
    clock = FakeClock()
    guard = BackendGuard("chat", 1.0, clock.now)

    def down() -> int:
        raise BackendError("redis: connection refused")

    for _ in range(2):  # two episodes
        for _ in range(5):
            assert guard.call(down, lambda exc: -1) == -1
            clock.advance(1.0)  # each call after the cooldown probes and fails again
        assert guard.call(lambda: 1, lambda exc: -1) == 1
        assert guard.call(lambda: 1, lambda exc: -1) == 1
    events = [(r.event, r.primitive_name) for r in caplog.records if hasattr(r, "event")]
    assert events == [("backend.down", "chat"), ("backend.up", "chat")] * 2
    up = [r for r in caplog.records if getattr(r, "event", None) == "backend.up"]
    assert up[0].down_seconds == 5.0  # type: ignore[attr-defined]


# -- DataLoader batch sizes ----------------------------------------------------------------------


async def test_loader_batch_sizes_are_a_histogram_in_the_registry() -> None:
    from scalekit.batching import DataLoader, request_scope

    name = unique("users")

    async def batch(keys: list[int]) -> list[int]:
        return [k * 2 for k in keys]

    loader: DataLoader[int, int] = DataLoader(batch, name=name, max_batch_size=4)
    with request_scope():
        assert await asyncio.gather(*(loader.load(i) for i in range(6))) == [
            0, 2, 4, 6, 8, 10,
        ]  # fmt: skip
        assert await loader.load(1) == 2  # from the scope's cache
    st = loader.stats()
    assert (st.loads, st.cache_hits, st.batches, st.keys_dispatched) == (7, 1, 2, 6)
    # sizes 4 and 2: buckets [1], [2, 3], [4, 7]
    assert st.batch_size_histogram[:3] == (0, 1, 1) and st.largest_batch == 4
    (m,) = [m for m in default_registry.collect() if m.name == "scalekit_loader_batch_size"]
    (s,) = [s for s in m.samples if s.labels["loader"] == name]
    assert s.count == 2 and s.value == 6
    assert series("scalekit_loader_loads_total")[(name,)] == 7


def test_a_source_registered_for_a_native_primitive_does_not_export_twice() -> None:
    name = unique("twice")
    breaker = CircuitBreaker(name, record=ConnectionError)
    breaker.call(lambda: None)
    default_registry.register_source("breaker", breaker.snapshot, name=name)
    try:
        for m in default_registry.collect():
            keys = [tuple(sorted(s.labels.items())) for s in m.samples]
            assert len(keys) == len(set(keys)), m.name
        assert series("scalekit_breaker_calls_total")[(name,)] == 1
        # what only the snapshot carries still comes from it
        assert series("scalekit_breaker_trips_total")[(name,)] == 0
    finally:
        default_registry.unregister_source("breaker", name)


async def test_health_report_rates_what_pools_and_breakers_report_natively() -> None:
    from scalekit.observability import health_report
    from scalekit.pools._metrics import PoolCounters

    bname, pname = unique("natively-open"), unique("natively-pool")
    breaker = CircuitBreaker(bname, record=ConnectionError)
    breaker.open()
    closed = CircuitBreaker(unique("natively-closed"), record=ConnectionError)
    counters = PoolCounters().attach(name=pname, kind="postgres", max_size=10, size=lambda: 10)
    counters.in_use, counters.waiters = 9, 2
    report = await health_report()  # nothing registered: the default registry's own series
    assert report.check(f"breaker.{bname}").status == "warning"
    assert report.check(f"breaker.{bname}").detail == "forced_open"
    assert report.check(f"breaker.{closed.name}").status == "ok"
    pool = report.check(f"pool.{pname}")
    assert pool.status == "critical" and pool.value == 9 and pool.data["waiters"] == 2


async def test_background_tasks_report_natively() -> None:
    from scalekit.sampling import BackgroundTasks

    name = unique("spawner")
    tasks = BackgroundTasks(1, max_pending=1, name=name)
    gate = asyncio.Event()

    async def work(fail: bool) -> None:
        await gate.wait()
        if fail:
            raise ValueError("boom")

    with pytest.raises(ConfigurationError):
        tasks.spawn(None)  # type: ignore[arg-type]
    assert tasks.spawn(work(False)) is not None
    assert tasks.spawn(work(True)) is not None
    assert tasks.spawn(work(False)) is None  # 1 running + 1 pending: dropped
    assert series("scalekit_tasks_running")[(name,)] == 2
    gate.set()
    await tasks.drain()
    assert tasks.stats().as_dict() == {
        "spawned": 2, "succeeded": 1, "failed": 1, "dropped": 1, "cancelled": 0, "running": 0,
    }  # fmt: skip
    for what, n in (("spawned", 2), ("succeeded", 1), ("failed", 1), ("dropped", 1)):
        assert series(f"scalekit_tasks_{what}_total")[(name,)] == n
    assert series("scalekit_tasks_running")[(name,)] == 0

"""The adapter from the primitives' ``stats()`` methods to metric families.

Each primitive already counts what it does and returns it in a shape of its own
(a ``dict`` from ``RateLimiter.stats()``, ``CacheStats``, ``BreakerSnapshot``,
``PoolStats``, ...). A *source* is one such callable registered with
:meth:`Registry.register_source`; at collection time it is called and each field
named in the table below becomes a sample of a conventionally named metric
(``scalekit_<primitive>_<what>[_<unit>][_total]``) labelled with the primitive's
name. The same tables are the names the primitives will report natively.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from scalekit.errors import ConfigurationError
from scalekit.observability._metrics import Metric, MetricKind, Sample

__all__ = ["SHAPES", "Field", "Source"]


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a stats object and the metric it becomes."""

    attr: str
    metric: str
    kind: MetricKind
    help: str
    unit: str = ""


def _c(attr: str, metric: str, help: str, unit: str = "") -> Field:
    return Field(attr, metric, "counter", help, unit)


def _g(attr: str, metric: str, help: str, unit: str = "") -> Field:
    return Field(attr, metric, "gauge", help, unit)


@dataclass(frozen=True, slots=True)
class Shape:
    """How a kind of stats object is exported: its name label and its fields."""

    label: str
    fields: tuple[Field, ...]
    #: extra fixed labels read from the object: label name -> attribute
    extra: tuple[tuple[str, str], ...] = ()


SHAPES: dict[str, Shape] = {
    # RateLimiter.stats() -> dict[str, int]
    "ratelimit": Shape("limiter", (
        _c("allowed", "scalekit_ratelimit_allowed_total", "Hits allowed."),
        _c("denied", "scalekit_ratelimit_denied_total", "Hits denied (over the limit)."),
        _c("degraded", "scalekit_ratelimit_degraded_total",
           "Decisions taken by the failure policy while the backend was down."),
        _c("refused_full", "scalekit_ratelimit_refused_full_total",
           "Hits refused because the in-memory store was full."),
        _c("backend_errors", "scalekit_ratelimit_backend_errors_total",
           "Backend calls that failed."),
        _c("backend_episodes", "scalekit_ratelimit_backend_episodes_total",
           "Times the backend went down (one per outage, not per call)."),
    )),
    # Cache.stats() -> CacheStats
    "cache": Shape("cache", (
        _c("hits", "scalekit_cache_hits_total", "Reads answered from the cache."),
        _c("misses", "scalekit_cache_misses_total", "Reads that found nothing fresh."),
        _c("stale_served", "scalekit_cache_stale_served_total",
           "Reads answered with a stale value while a refresh ran."),
        _c("loads", "scalekit_cache_loads_total", "Loader calls."),
        _c("load_errors", "scalekit_cache_load_errors_total", "Loader calls that raised."),
        _c("load_time_total", "scalekit_cache_load_seconds_total",
           "Time spent in the loader.", "seconds"),
        _c("evictions", "scalekit_cache_evictions_total", "Entries evicted for space."),
        _c("decode_errors", "scalekit_cache_decode_errors_total",
           "Entries that could not be decoded (served as misses)."),
        _c("backend_errors", "scalekit_cache_backend_errors_total", "Backend calls that failed."),
        _c("coalesced", "scalekit_cache_coalesced_total",
           "Readers that waited for another caller's load of the same key."),
        _c("invalidations", "scalekit_cache_invalidations_total", "Invalidations applied."),
        _c("invalidations_deferred", "scalekit_cache_invalidations_deferred_total",
           "Invalidations queued while the backend was down."),
    )),
    # CircuitBreaker.snapshot() -> BreakerSnapshot; BreakerRegistry.snapshot() -> dict
    "breaker": Shape("breaker", (
        _g("retry_after", "scalekit_breaker_retry_after_seconds",
           "Seconds until an open breaker lets a probe through.", "seconds"),
        _g("consecutive_failures", "scalekit_breaker_consecutive_failures",
           "Failures in a row."),
        _g("window_calls", "scalekit_breaker_window_calls", "Calls in the sliding window."),
        _g("failure_rate", "scalekit_breaker_failure_ratio",
           "Share of failures in the window.", "ratio"),
        _g("slow_call_rate", "scalekit_breaker_slow_call_ratio",
           "Share of slow calls in the window.", "ratio"),
        _c("trips", "scalekit_breaker_trips_total", "Transitions to open."),
        _c("calls", "scalekit_breaker_calls_total", "Calls through the breaker."),
        _c("successes", "scalekit_breaker_successes_total", "Calls recorded as successes."),
        _c("failures", "scalekit_breaker_failures_total", "Calls recorded as failures."),
        _c("ignored", "scalekit_breaker_ignored_total", "Calls neither success nor failure."),
        _c("rejected", "scalekit_breaker_rejected_total", "Calls refused while open."),
    )),
    # Bulkhead.stats() -> BulkheadStats
    "bulkhead": Shape("bulkhead", (
        _g("running", "scalekit_bulkhead_running", "Calls running now."),
        _g("queued", "scalekit_bulkhead_queued", "Calls waiting for a slot now."),
        _c("admitted", "scalekit_bulkhead_admitted_total", "Calls admitted."),
        _c("rejected", "scalekit_bulkhead_rejected_total", "Calls rejected (full)."),
    )),
    # RetryBudget.stats() -> RetryStats
    "retry": Shape("budget", (
        _c("calls", "scalekit_retry_calls_total", "Calls seen by the retry budget."),
        _c("retries", "scalekit_retry_retries_total", "Retries granted."),
        _c("refused", "scalekit_retry_refused_total", "Retries refused (budget exhausted)."),
    )),
    # Pipeline.stats() -> SamplingStats (skipped per stage: see _stage_samples)
    "sampling": Shape("pipeline", (
        _c("considered", "scalekit_sampling_considered_total", "Items decided."),
        _c("sampled", "scalekit_sampling_sampled_total", "Items kept."),
    )),
    # BackgroundTasks.stats() -> dict[str, int] (the @sampled spawner)
    "tasks": Shape("tasks", (
        _c("spawned", "scalekit_tasks_spawned_total", "Background tasks spawned."),
        _c("succeeded", "scalekit_tasks_succeeded_total", "Tasks that returned."),
        _c("failed", "scalekit_tasks_failed_total", "Tasks that raised."),
        _c("dropped", "scalekit_tasks_dropped_total", "Tasks dropped (limit reached)."),
        _c("cancelled", "scalekit_tasks_cancelled_total", "Tasks cancelled."),
        _g("running", "scalekit_tasks_running", "Tasks not finished."),
    )),
    # PostgresPool.stats() / the Redis pools' stats() -> PoolStats; PoolRegistry.stats() -> list
    "pool": Shape("pool", (
        _g("max_size", "scalekit_pool_max_connections", "Configured maximum.", "connections"),
        _g("size", "scalekit_pool_open_connections", "Connections open now.", "connections"),
        _g("idle", "scalekit_pool_idle_connections", "Open and free.", "connections"),
        _g("in_use", "scalekit_pool_in_use_connections", "Handed out now.", "connections"),
        _g("waiters", "scalekit_pool_waiters", "Callers waiting for a connection now."),
        _c("acquired", "scalekit_pool_acquired_total", "Connections handed out."),
        _c("timeouts", "scalekit_pool_timeouts_total", "Acquires that timed out (exhausted)."),
        _c("wait_seconds_total", "scalekit_pool_wait_seconds_total",
           "Time spent waiting in acquire.", "seconds"),
        _g("wait_seconds_max", "scalekit_pool_wait_max_seconds",
           "Longest wait in acquire.", "seconds"),
        _c("recycled", "scalekit_pool_recycled_total", "Connections replaced for their age."),
        _c("ping_failures", "scalekit_pool_ping_failures_total", "Pre-pings that failed."),
        _c("retries", "scalekit_pool_retries_total",
           "Queries re-run after a cached statement was invalidated."),
    ), extra=(("kind", "kind"),)),
    # RedisBackend.stats() -> RedisStats (its pools report natively as kind="redis")
    "redis": Shape("backend", (
        _c("commands", "scalekit_redis_commands_total",
           "Commands sent through the auto-pipeline."),
        _c("batches", "scalekit_redis_batches_total", "Writes those commands took."),
        _g("max_pipeline_depth", "scalekit_redis_max_pipeline_depth",
           "Most replies ever awaited on one connection."),
        _g("in_flight", "scalekit_redis_in_flight", "Commands sent or queued, not answered."),
        _c("errors", "scalekit_redis_errors_total",
           "Callers failed by a connection error or a timeout in the auto-pipeline."),
    )),
    # DataLoader.stats() -> LoaderStats (batch sizes: see _batch_histogram)
    "loader": Shape("loader", (
        _c("loads", "scalekit_loader_loads_total", "Keys asked for."),
        _c("cache_hits", "scalekit_loader_cache_hits_total", "Loads answered from the cache."),
        _c("keys_dispatched", "scalekit_loader_keys_dispatched_total",
           "Keys sent to the batch function."),
        _c("batches", "scalekit_loader_batches_total", "Batch function calls."),
        _c("failed_batches", "scalekit_loader_failed_batches_total", "Batches that raised."),
        _c("key_errors", "scalekit_loader_key_errors_total", "Keys that failed alone."),
        _g("largest_batch", "scalekit_loader_largest_batch", "Largest batch so far."),
    )),
}  # fmt: skip

_BREAKER_STATES = ("closed", "open", "half_open", "forced_open", "disabled")


def _get(obj: Any, attr: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(attr)
    return getattr(obj, attr, None)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass(slots=True)
class Source:
    """A registered ``stats`` callable. A bound method is held weakly: when its
    primitive is garbage-collected, the source reads as empty."""

    kind: str
    ref: Callable[[], Callable[[], object] | None]
    name: str | None
    key: str
    errors: int = 0

    @classmethod
    def build(cls, kind: str, stats: Callable[[], object], name: str | None) -> Source:
        if kind not in SHAPES:
            raise ConfigurationError(f"kind must be one of {sorted(SHAPES)}, got {kind!r}")
        if not callable(stats):
            raise ConfigurationError(f"stats must be a callable returning stats, got {stats!r}")
        if name is not None and (not isinstance(name, str) or not name or len(name) > 128):
            raise ConfigurationError(f"name must be a non-empty str, got {name!r}")
        owner = getattr(stats, "__self__", None)
        ref: Callable[[], Callable[[], object] | None]
        if owner is not None and not isinstance(owner, type | ModuleType):
            try:
                ref = weakref.WeakMethod(stats)
            except TypeError:
                ref = lambda: stats  # noqa: E731
        else:
            ref = lambda: stats  # noqa: E731
        own = getattr(owner, "name", None)
        key = name or (own if isinstance(own, str) and own else f"#{id(stats)}")
        return cls(kind, ref, name, key)

    def read(self) -> Iterator[tuple[str, Any]]:
        """``(name, stats object)`` pairs; a callable that raises yields nothing."""
        stats = self.ref()
        if stats is None:
            return
        try:
            result = stats()
        except Exception:
            self.errors += 1
            return
        if isinstance(result, Mapping) and not any(
            isinstance(v, int | float) for v in result.values()
        ):
            # name -> stats (BreakerRegistry.snapshot()), not a stats dict of numbers
            for key, obj in list(result.items()):
                own = _get(obj, "name")
                yield str(own if isinstance(own, str) and own else key), obj
            return
        if not isinstance(result, list | tuple) or hasattr(result, "_fields"):
            # one stats object (a NamedTuple is one): the name given wins over its own
            own = _get(result, "name")
            yield self.name or str(own if isinstance(own, str) and own else self.kind), result
            return
        for obj in result:
            own = _get(obj, "name")
            yield str(own if isinstance(own, str) and own else self.name or self.kind), obj

    def collect(self) -> list[Metric]:
        shape = SHAPES[self.kind]
        per_metric: dict[str, tuple[Field | None, tuple[str, ...], list[Sample]]] = {}

        def add(f: Field, labels: dict[str, str], value: float) -> None:
            entry = per_metric.setdefault(f.metric, (f, tuple(labels), []))
            entry[2].append(Sample(labels, value))

        for name, obj in self.read():
            labels = {shape.label: name}
            for label, attr in shape.extra:
                labels[label] = str(_get(obj, attr) or "unknown")
            for f in shape.fields:
                value = _number(_get(obj, f.attr))
                if value is not None:
                    add(f, labels, value)
            if self.kind == "breaker":
                state = str(getattr(_get(obj, "state"), "value", _get(obj, "state")))
                f = _g("state", "scalekit_breaker_state", "1 for the breaker's current state.")
                for s in _BREAKER_STATES:
                    add(f, {**labels, "state": s}, 1.0 if s == state else 0.0)
            elif self.kind == "sampling":
                f = _c("skipped", "scalekit_sampling_skipped_total", "Items skipped, per stage.")
                skipped = _get(obj, "skipped") or {}
                for stage, n in skipped.items():
                    value = _number(n)
                    if value is not None:
                        add(f, {**labels, "stage": str(stage)[:128] or "_"}, value)
            elif self.kind == "loader":
                hist = _batch_histogram(obj)
                if hist is not None:
                    key = "scalekit_loader_batch_size"
                    entry = per_metric.setdefault(key, (None, (shape.label,), []))
                    entry[2].append(Sample(labels, hist[0], hist[1]))
        out = []
        for metric, (spec, labelnames, samples) in per_metric.items():
            if spec is None:
                out.append(
                    Metric(metric, "histogram", "Keys per batch.", "", labelnames, tuple(samples))
                )
            else:
                m = Metric(metric, spec.kind, spec.help, spec.unit, labelnames, tuple(samples))
                out.append(m)
        return out


def _batch_histogram(obj: Any) -> tuple[float, tuple[tuple[float, int], ...]] | None:
    """LoaderStats' ``batch_size_histogram[i]`` counts sizes in ``[2**i, 2**(i+1))``:
    as cumulative ``le`` buckets, bucket ``i`` ends at ``2**(i+1) - 1``."""
    counts = _get(obj, "batch_size_histogram")
    if not isinstance(counts, tuple | list) or not counts:
        return None
    total = 0
    buckets = []
    for i, n in enumerate(counts):
        total += int(n)
        bound = math.inf if i == len(counts) - 1 else float(2 ** (i + 1) - 1)
        buckets.append((bound, total))
    return float(_number(_get(obj, "keys_dispatched")) or 0.0), tuple(buckets)

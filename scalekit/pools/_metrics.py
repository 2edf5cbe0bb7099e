"""Pool metrics with the same names for PostgreSQL and Redis.

A pool keeps its counts in :class:`PoolCounters`: the totals (acquired, timeouts,
recycled, ping failures, retries) are counters of the metrics registry
(``scalekit_pool_*_total{pool, kind}``), the wait of each acquire goes into the
``scalekit_pool_acquire_seconds`` histogram, and the levels (open, in use, idle,
waiters, maximum) are callback gauges read at collection. ``in_use`` and
``waiters`` are plain integers updated on the hot path without locks (each update
is a single attribute store under the GIL). ``stats()`` returns a frozen
:class:`PoolStats` snapshot read from the same counters.
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

from scalekit.observability._events import log_event
from scalekit.observability._metrics import Counter, Histogram
from scalekit.observability._metrics import default_registry as _metrics

__all__ = ["PoolCounters", "PoolStats"]

#: seconds between two pool.exhausted events of one pool while it stays exhausted
_EVERY = 10.0

_LABELS = ("pool", "kind")
_ACQUIRED = _metrics.counter(
    "scalekit_pool_acquired_total", "Connections handed out.", labels=_LABELS
)
_TIMEOUTS = _metrics.counter(
    "scalekit_pool_timeouts_total", "Acquires that timed out (exhausted).", labels=_LABELS
)
_RECYCLED = _metrics.counter(
    "scalekit_pool_recycled_total", "Connections replaced for their age.", labels=_LABELS
)
_PING_FAILURES = _metrics.counter(
    "scalekit_pool_ping_failures_total", "Pre-pings that failed.", labels=_LABELS
)
_RETRIES = _metrics.counter(
    "scalekit_pool_retries_total",
    "Queries re-run after a cached statement was invalidated.",
    labels=_LABELS,
)
_ACQUIRE_TIME = _metrics.histogram(
    "scalekit_pool_acquire_seconds",
    "Time spent in acquire (successful or not).",
    labels=_LABELS,
    unit="seconds",
)
_GAUGES = {
    "max_size": _metrics.gauge(
        "scalekit_pool_max_connections", "Configured maximum.", labels=_LABELS, unit="connections"
    ),
    "size": _metrics.gauge(
        "scalekit_pool_open_connections", "Connections open now.", labels=_LABELS,
        unit="connections",
    ),
    "idle": _metrics.gauge(
        "scalekit_pool_idle_connections", "Open and free.", labels=_LABELS, unit="connections"
    ),
    "in_use": _metrics.gauge(
        "scalekit_pool_in_use_connections", "Handed out now.", labels=_LABELS,
        unit="connections",
    ),
    "waiters": _metrics.gauge(
        "scalekit_pool_waiters", "Callers waiting for a connection now.", labels=_LABELS
    ),
}  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolStats:
    """A snapshot of one pool.

    - ``max_size``: configured maximum; ``size``: connections open now;
      ``idle``: open and free; ``in_use``: handed out; ``waiters``: callers waiting
      for a connection now.
    - ``acquired``: connections handed out so far; ``timeouts``: acquires that ended
      in :class:`~scalekit.errors.PoolExhausted`.
    - ``wait_seconds_total`` / ``wait_seconds_max``: time spent waiting in acquire
      (successful or not).
    - ``recycled``: connections replaced for their age (``max_lifetime``);
      ``ping_failures``: pre-pings that failed (the connection was replaced);
      ``retries``: queries re-run once after a cached statement was invalidated
      (PostgreSQL; always 0 for Redis).
    """

    name: str
    kind: Literal["postgres", "redis"]
    max_size: int
    size: int
    idle: int
    in_use: int
    waiters: int
    acquired: int
    timeouts: int
    wait_seconds_total: float
    wait_seconds_max: float
    recycled: int
    ping_failures: int
    retries: int

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class PoolCounters:
    """The counts of one pool (private to the pool implementations).

    Built unattached (counters of their own, nothing exported); :meth:`attach`
    puts them in the metrics registry under the pool's name and kind.
    """

    __slots__ = (
        "__weakref__",
        "_logged_at",
        "_unlogged",
        "acquired",
        "in_use",
        "ping_failures",
        "recycled",
        "retries",
        "timeouts",
        "wait_hist",
        "wait_max",
        "wait_total",
        "waiters",
    )

    def __init__(self) -> None:
        self.acquired = Counter()
        self.timeouts = Counter()
        self.recycled = Counter()
        self.ping_failures = Counter()
        self.retries = Counter()
        self.wait_hist: Histogram | None = None
        self.in_use = 0
        self.waiters = 0
        self.wait_total = 0.0
        self.wait_max = 0.0
        self._logged_at = -math.inf
        self._unlogged = 0

    def exhausted(self, name: str, kind: str, size: int, timeout: float) -> None:
        """Count one acquire that timed out, and log ``pool.exhausted``: once, then at
        most every ``_EVERY`` seconds while it goes on (with the count since)."""
        self.timeouts.inc()
        now = time.monotonic()
        if now - self._logged_at < _EVERY:
            self._unlogged += 1
            return
        since, self._unlogged, self._logged_at = self._unlogged, 0, now
        log_event(
            "pool.exhausted",
            pool=name,
            kind=kind,
            size=size,
            waiters=self.waiters,
            timeout=timeout,
            unlogged=since,
        )

    def attach(
        self,
        *,
        name: str,
        kind: Literal["postgres", "redis"],
        max_size: int,
        size: Callable[[], int],
    ) -> PoolCounters:
        """Report into the metrics registry as pool ``name`` of ``kind``; ``size``
        answers the connections open now (it must not hold the pool strongly)."""
        label = name[:128] or "pool"
        self.acquired = _ACQUIRED.attach(self, label, kind)
        self.timeouts = _TIMEOUTS.attach(self, label, kind)
        self.recycled = _RECYCLED.attach(self, label, kind)
        self.ping_failures = _PING_FAILURES.attach(self, label, kind)
        self.retries = _RETRIES.attach(self, label, kind)
        self.wait_hist = _ACQUIRE_TIME.attach(self, label, kind)
        ref = weakref.ref(self)

        def level(what: str) -> Callable[[], float]:
            def read() -> float:
                c = ref()
                if c is None:
                    return 0.0
                if what == "max_size":
                    return float(max_size)
                if what == "in_use":
                    return float(c.in_use)
                if what == "waiters":
                    return float(c.waiters)
                open_now = max(size(), c.in_use)
                return float(open_now if what == "size" else max(open_now - c.in_use, 0))

            return read

        for what, fam in _GAUGES.items():
            fam.attach(self, label, kind).set_function(level(what))
        return self

    def waited(self, seconds: float) -> None:
        self.wait_total += seconds
        if seconds > self.wait_max:
            self.wait_max = seconds
        hist = self.wait_hist
        if hist is not None:
            hist.observe(seconds)

    def snapshot(
        self, *, name: str, kind: Literal["postgres", "redis"], max_size: int, size: int
    ) -> PoolStats:
        in_use = self.in_use
        return PoolStats(
            name=name,
            kind=kind,
            max_size=max_size,
            size=max(size, in_use),
            idle=max(size - in_use, 0),
            in_use=in_use,
            waiters=self.waiters,
            acquired=int(self.acquired.value),
            timeouts=int(self.timeouts.value),
            wait_seconds_total=self.wait_total,
            wait_seconds_max=self.wait_max,
            recycled=int(self.recycled.value),
            ping_failures=int(self.ping_failures.value),
            retries=int(self.retries.value),
        )

"""Pool metrics with the same names for PostgreSQL and Redis.

A pool keeps a few integers and floats (:class:`PoolCounters`, updated on the hot
path without locks: each update is a single attribute store under the GIL, and a
reader may see one acquire counted before its wait time, never a torn value).
``stats()`` returns a frozen :class:`PoolStats` snapshot.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

__all__ = ["PoolCounters", "PoolStats"]


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
    """Mutable counters owned by one pool (private to the pool implementations)."""

    __slots__ = (
        "acquired",
        "in_use",
        "ping_failures",
        "recycled",
        "retries",
        "timeouts",
        "wait_max",
        "wait_total",
        "waiters",
    )

    def __init__(self) -> None:
        self.acquired = 0
        self.in_use = 0
        self.waiters = 0
        self.timeouts = 0
        self.wait_total = 0.0
        self.wait_max = 0.0
        self.recycled = 0
        self.ping_failures = 0
        self.retries = 0

    def waited(self, seconds: float) -> None:
        self.wait_total += seconds
        if seconds > self.wait_max:
            self.wait_max = seconds

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
            acquired=self.acquired,
            timeouts=self.timeouts,
            wait_seconds_total=self.wait_total,
            wait_seconds_max=self.wait_max,
            recycled=self.recycled,
            ping_failures=self.ping_failures,
            retries=self.retries,
        )

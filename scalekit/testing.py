"""Helpers for testing code that uses scalekit.

``FakeClock`` is a clock whose time moves only when told to, and whose ``sleep``
and ``asleep`` advance it instead of waiting, so tests of rate limits, windows and
timeouts run instantly and deterministically::

    from scalekit.testing import FakeClock

    clock = FakeClock()
    limiter = RateLimiter("memory://", "3/minute", clock=clock)
    ...
    clock.advance(60)
"""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

from scalekit._clock import Clock

__all__ = ["Clock", "FakeClock"]


class FakeClock:
    """A manually driven clock. Thread-safe; ``sleep``/``asleep`` advance it."""

    __slots__ = ("_lock", "_now", "sleeps")

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        # Unix-time magnitude by default: the float rounding of times near 1.7e9
        # (~2.4e-7 s) is what Redis TIME gives the scripts, so tests see it too.
        self._now = float(start)
        self._lock = threading.Lock()
        #: every duration passed to sleep()/asleep(), in order
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float | timedelta) -> float:
        """Move time forward; returns the new time."""
        if isinstance(seconds, timedelta):
            seconds = seconds.total_seconds()
        if seconds < 0:
            raise ValueError(f"a clock cannot go backwards (advance({seconds}))")
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, when: float) -> None:
        """Jump to an absolute time, which must not be earlier than now."""
        with self._lock:
            if when < self._now:
                raise ValueError(f"a clock cannot go backwards ({when} < {self._now})")
            self._now = float(when)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(max(0.0, seconds))

    async def asleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)  # still a scheduling point, as a real sleep is

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now!r})"

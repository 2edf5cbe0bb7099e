"""Clocks. Every time-based primitive takes ``clock=``; the default is monotonic.

A clock answers ``now()`` in seconds (any origin, never going backwards) and knows
how to wait: ``sleep()`` for threads and ``asleep()`` for asyncio. Tests pass
:class:`scalekit.testing.FakeClock`, whose waits advance time instead of sleeping.
A plain zero-argument callable returning seconds is accepted too (like cachetools'
``timer=``); its waits are real sleeps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "MonotonicClock", "as_clock", "MONOTONIC"]


@runtime_checkable
class Clock(Protocol):
    """What scalekit needs from a clock."""

    def now(self) -> float:
        """Seconds from an arbitrary origin; never decreases."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for ``seconds``."""
        ...

    async def asleep(self, seconds: float) -> None:
        """Suspend the calling task for ``seconds``."""
        ...


class MonotonicClock:
    """``time.monotonic`` with real sleeps: the default clock."""

    __slots__ = ()

    now = staticmethod(time.monotonic)
    sleep = staticmethod(time.sleep)

    async def asleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def __repr__(self) -> str:
        return "MonotonicClock()"


class _CallableClock:
    __slots__ = ("now",)

    def __init__(self, fn: Callable[[], float]) -> None:
        self.now = fn

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def __repr__(self) -> str:
        return f"Clock({self.now!r})"


MONOTONIC = MonotonicClock()


def as_clock(clock: Clock | Callable[[], float] | None) -> Clock:
    """Normalise a ``clock=`` argument: ``None`` means monotonic."""
    if clock is None:
        return MONOTONIC
    if isinstance(clock, Clock):
        return clock
    if callable(clock):
        return _CallableClock(clock)
    from scalekit.errors import ConfigurationError

    raise ConfigurationError(
        f"clock must be a Clock (now/sleep/asleep) or a callable returning seconds, got {clock!r}"
    )

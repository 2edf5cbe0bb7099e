"""Breaker configuration: one frozen, validated :class:`BreakerPolicy`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from scalekit import _validate as check
from scalekit.errors import ConfigurationError

__all__ = ["BreakerPolicy", "State"]


class State(StrEnum):
    """A breaker's state. ``FORCED_OPEN`` and ``DISABLED`` are set only by hand."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"


def _threshold(value: object, what: str) -> float | None:
    """A rate threshold in (0, 1] (0.5 means 50 %); 0 would trip on every call."""
    if value is None:
        return None
    return check.number(value, what, minimum=0, maximum=1, open_minimum=True)


def _optional_count(value: object, what: str) -> int | None:
    return None if value is None else check.count(value, what)


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerPolicy:
    """When a breaker trips, how long it stays open, and how it probes.

    Trip conditions (any one trips the breaker):

    - ``failure_threshold``: this many consecutive failures (``None``: off);
    - ``failure_rate_threshold``: the failed fraction of the calls in the sliding
      window, once the window holds ``minimum_calls`` calls;
    - ``slow_call_rate_threshold``: the fraction of calls that took at least
      ``slow_call_duration``, under the same minimum.

    The rate conditions need a window: ``window_size`` (the last N calls) or
    ``window_duration`` (the calls of the last T seconds, in 10 buckets).

    Open duration: ``open_duration``; with ``max_open_duration`` each trip that
    follows a failed probe multiplies it by ``backoff_multiplier`` up to the
    maximum. ``jitter`` (0..1) shortens each open period by a random fraction up to
    ``jitter``, so a fleet does not probe in lockstep.

    Half-open: at most ``half_open_max_calls`` probe calls are admitted (others are
    rejected at once); the breaker closes when all of them succeed and opens again
    at the first failure. A probe still running after ``probe_timeout`` counts as
    a failure and its late outcome is ignored.
    """

    failure_threshold: int | None = 5
    failure_rate_threshold: float | None = None
    slow_call_duration: float | timedelta | None = None
    slow_call_rate_threshold: float | None = None
    window_size: int | None = None
    window_duration: float | timedelta | None = None
    minimum_calls: int = 10
    open_duration: float | timedelta = 30.0
    max_open_duration: float | timedelta | None = None
    backoff_multiplier: float = 2.0
    jitter: float = 0.0
    half_open_max_calls: int = 1
    probe_timeout: float | timedelta = 60.0

    def __post_init__(self) -> None:
        def set_(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        set_("failure_threshold", _optional_count(self.failure_threshold, "failure_threshold"))
        for name in ("failure_rate_threshold", "slow_call_rate_threshold"):
            set_(name, _threshold(getattr(self, name), name))
        for name in ("slow_call_duration", "window_duration", "max_open_duration"):
            set_(name, check.optional_duration(getattr(self, name), name))
        for name in ("open_duration", "probe_timeout"):
            set_(name, check.duration(getattr(self, name), name))
        set_("window_size", _optional_count(self.window_size, "window_size"))
        for name in ("minimum_calls", "half_open_max_calls"):
            set_(name, check.count(getattr(self, name), name))
        set_(
            "backoff_multiplier",
            check.number(self.backoff_multiplier, "backoff_multiplier", minimum=1),
        )
        set_("jitter", check.fraction(self.jitter, "jitter"))
        if self.max_open_s is not None and self.max_open_s < self.open_s:
            raise ConfigurationError(
                f"max_open_duration ({self.max_open_s!r}) must be >= open_duration "
                f"({self.open_s!r})"
            )
        if self.window_size is not None and self.window_duration is not None:
            raise ConfigurationError(
                "give window_size (count-based) or window_duration (time-based), not both"
            )
        rated = self.failure_rate_threshold is not None or self.slow_call_rate_threshold is not None
        windowed = self.window_size is not None or self.window_duration is not None
        if rated and not windowed:
            raise ConfigurationError(
                "failure_rate_threshold and slow_call_rate_threshold need a sliding window: "
                "window_size=N (last N calls) or window_duration=seconds"
            )
        if windowed and not rated:
            raise ConfigurationError(
                "a window (window_size / window_duration) needs failure_rate_threshold "
                "and/or slow_call_rate_threshold"
            )
        if (self.slow_call_rate_threshold is None) != (self.slow_call_duration is None):
            raise ConfigurationError(
                "slow_call_duration and slow_call_rate_threshold go together: give both or neither"
            )
        if self.failure_threshold is None and not rated:
            raise ConfigurationError(
                "the breaker could never trip: give failure_threshold, failure_rate_threshold "
                "or slow_call_rate_threshold"
            )

    # typed accessors (the fields accept timedelta; after validation they hold floats)
    @property
    def open_s(self) -> float:
        return float(self.open_duration)  # type: ignore[arg-type]

    @property
    def max_open_s(self) -> float | None:
        v = self.max_open_duration
        return None if v is None else float(v)  # type: ignore[arg-type]

    @property
    def probe_timeout_s(self) -> float:
        return float(self.probe_timeout)  # type: ignore[arg-type]

    @property
    def slow_s(self) -> float | None:
        v = self.slow_call_duration
        return None if v is None else float(v)  # type: ignore[arg-type]

    @property
    def window_s(self) -> float | None:
        v = self.window_duration
        return None if v is None else float(v)  # type: ignore[arg-type]

    @property
    def windowed(self) -> bool:
        return self.window_size is not None or self.window_duration is not None

    def open_duration_for(self, trips: int, u: float) -> float:
        """How long the ``trips``-th consecutive trip keeps the breaker open.

        ``u`` is a uniform random number in [0, 1) (used only with ``jitter``).
        """
        d = self.open_s
        cap = self.max_open_s
        if cap is not None and trips > 1:
            k = trips - 1
            if k * math.log(self.backoff_multiplier) >= math.log(cap / d):
                d = cap
            else:
                d = min(cap, d * self.backoff_multiplier**k)
        if self.jitter:
            d *= 1.0 - self.jitter * u
        return d

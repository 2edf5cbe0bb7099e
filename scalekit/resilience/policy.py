"""Breaker configuration: one frozen, validated :class:`BreakerPolicy`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from scalekit.errors import ConfigurationError

__all__ = ["BreakerPolicy", "State", "seconds"]


class State(StrEnum):
    """A breaker's state. ``FORCED_OPEN`` and ``DISABLED`` are set only by hand."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"


def seconds(
    name: str,
    value: float | timedelta | None,
    *,
    allow_none: bool = False,
    allow_zero: bool = False,
) -> float | None:
    """Validate a duration argument: seconds (``int``/``float``) or a ``timedelta``."""
    if value is None:
        if allow_none:
            return None
        raise ConfigurationError(f"{name} is required: a number of seconds or a timedelta")
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(
            f"{name} must be a number of seconds or a timedelta, got {value!r}"
        )
    ok = value >= 0 if allow_zero else value > 0
    if not ok or not math.isfinite(value):
        what = "non-negative" if allow_zero else "positive"
        raise ConfigurationError(f"{name} must be a {what}, finite duration, got {value!r}")
    return float(value)


def _fraction(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ConfigurationError(
            f"{name} must be a fraction in (0, 1] (0.5 means 50 %), got {value!r}"
        )
    return float(value)


def _count(name: str, value: int | None, *, allow_none: bool = True) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be an int >= 1, got {value!r}")
    return value


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
        setattr_ = object.__setattr__
        setattr_(self, "failure_threshold", _count("failure_threshold", self.failure_threshold))
        setattr_(
            self,
            "failure_rate_threshold",
            _fraction("failure_rate_threshold", self.failure_rate_threshold),
        )
        setattr_(
            self,
            "slow_call_rate_threshold",
            _fraction("slow_call_rate_threshold", self.slow_call_rate_threshold),
        )
        setattr_(
            self,
            "slow_call_duration",
            seconds("slow_call_duration", self.slow_call_duration, allow_none=True),
        )
        setattr_(self, "window_size", _count("window_size", self.window_size))
        setattr_(
            self,
            "window_duration",
            seconds("window_duration", self.window_duration, allow_none=True),
        )
        setattr_(
            self, "minimum_calls", _count("minimum_calls", self.minimum_calls, allow_none=False)
        )
        setattr_(self, "open_duration", seconds("open_duration", self.open_duration))
        setattr_(
            self,
            "max_open_duration",
            seconds("max_open_duration", self.max_open_duration, allow_none=True),
        )
        setattr_(self, "probe_timeout", seconds("probe_timeout", self.probe_timeout))
        setattr_(
            self,
            "half_open_max_calls",
            _count("half_open_max_calls", self.half_open_max_calls, allow_none=False),
        )
        m = self.backoff_multiplier
        if isinstance(m, bool) or not isinstance(m, int | float) or not 1 <= m < math.inf:
            raise ConfigurationError(f"backoff_multiplier must be a number >= 1, got {m!r}")
        setattr_(self, "backoff_multiplier", float(m))
        j = self.jitter
        if isinstance(j, bool) or not isinstance(j, int | float) or not 0 <= j <= 1:
            raise ConfigurationError(f"jitter must be a fraction in [0, 1], got {j!r}")
        setattr_(self, "jitter", float(j))
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

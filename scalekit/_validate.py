"""The one validation module: every primitive checks its inputs with these functions.

Each function takes the value and ``what`` (the argument's name, as the user wrote it)
and returns the normalised value or raises :class:`~scalekit.errors.ConfigurationError`
with a message that says what was wrong and what is allowed. Bounds are those every
backend can represent: Redis stores integers exactly up to 2**53 in Lua (doubles) and
milliseconds in ``PEXPIRE``; :data:`MAX_SECONDS` (100 years) and :data:`MAX_COUNT`
(10**12) leave room for arithmetic on top (a count times a cost, now + a period in
microseconds) without losing precision.

``bool`` is never accepted where a number is meant (``True`` is not a cost of 1).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from datetime import timedelta
from typing import Final

from scalekit.errors import ConfigurationError

__all__ = [
    "MAX_COUNT",
    "MAX_SECONDS",
    "FAILURE_POLICIES",
    "count",
    "duration",
    "failure_policy",
    "fraction",
    "key",
    "name",
    "number",
    "optional_duration",
    "timeout",
]

#: the longest duration any primitive accepts: 100 years, in seconds
MAX_SECONDS: Final = 100 * 365.25 * 86400.0
#: the largest limit, cost, size or count any primitive accepts
MAX_COUNT: Final = 10**12


def duration(
    value: object,
    what: str,
    *,
    allow_zero: bool = False,
    maximum: float = MAX_SECONDS,
) -> float:
    """Seconds as a float from ``float | int | timedelta``: finite, > 0 (or >= 0), bounded."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(
            f"{what} must be a number of seconds or a timedelta, got {value!r}"
        )
    seconds = float(value)
    if math.isnan(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigurationError(f"{what} must be {bound} seconds, got {value!r}")
    if seconds > maximum:
        raise ConfigurationError(
            f"{what} must be at most {maximum:.0f} seconds (what every backend can store), "
            f"got {value!r}"
        )
    return seconds


def optional_duration(value: object, what: str, *, allow_zero: bool = False) -> float | None:
    """:func:`duration`, or ``None`` passed through (meaning "no limit")."""
    if value is None:
        return None
    return duration(value, what, allow_zero=allow_zero)


def timeout(value: object, what: str = "timeout") -> float | None:
    """A wait: ``None`` (wait for ever) or ``>= 0`` seconds; NaN and negatives refused."""
    return optional_duration(value, what, allow_zero=True)


def count(value: object, what: str, *, minimum: int = 1, maximum: int = MAX_COUNT) -> int:
    """An ``int`` (not a ``bool``) in ``[minimum, maximum]``: limits, costs, sizes."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{what} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ConfigurationError(f"{what} must be an int >= {minimum}, got {value!r}")
    if value > maximum:
        raise ConfigurationError(
            f"{what} must be at most {maximum} (what every backend can store exactly), "
            f"got {value!r}"
        )
    return int(value)


def fraction(value: object, what: str) -> float:
    """A probability or ratio in ``[0, 1]``; NaN, ``None`` and bools refused."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{what} must be a number in [0, 1], got {value!r}")
    f = float(value)
    if not 0.0 <= f <= 1.0:  # also false for NaN
        raise ConfigurationError(f"{what} must be a number in [0, 1], got {value!r}")
    return f


def number(
    value: object,
    what: str,
    *,
    minimum: float,
    maximum: float = math.inf,
    open_minimum: bool = False,
) -> float:
    """A finite real (not a ``bool``) in ``[minimum, maximum]`` (``(minimum, maximum]``
    with ``open_minimum``): multipliers, ratios, weights, thresholds -- numbers that
    are neither durations nor counts. NaN and infinities are refused."""
    low = "(" if open_minimum else "["
    bound = f"in {low}{minimum:g}, {maximum:g}]"
    if maximum == math.inf:
        bound = f"{'>' if open_minimum else '>='} {minimum:g}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{what} must be a finite number {bound}, got {value!r}")
    f = float(value)
    ok = (minimum < f if open_minimum else minimum <= f) and f <= maximum and math.isfinite(f)
    if not ok:  # also for NaN
        raise ConfigurationError(f"{what} must be a finite number {bound}, got {value!r}")
    return f


def key(value: object, what: str = "key") -> str:
    """A user-supplied key: any ``str`` (a ``StrEnum`` member or other subclass is
    reduced to its plain string value); anything else is refused."""
    if type(value) is str:
        return value
    if isinstance(value, str):
        return str.__str__(value)
    raise ConfigurationError(f"{what} must be a str, got {type(value).__name__}: {value!r}")


def name(value: object, what: str) -> str:
    """A name given in code (a limiter's, a cache's): a non-empty ``str``."""
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{what} must be a non-empty str, got {value!r}")
    return str.__str__(value)


#: the one failure-policy vocabulary: what a primitive does while its backend is down
#: (docs/explanation/redis-layer.md has the table of who supports which)
FAILURE_POLICIES: Final = ("fail_open", "fail_closed", "local_fallback")
_warned_aliases: set[tuple[str, str]] = set()


def failure_policy(
    value: object,
    what: str,
    *,
    allowed: tuple[str, ...] = FAILURE_POLICIES,
    deprecated: Mapping[str, str] | None = None,
) -> str:
    """One of ``allowed`` (names from :data:`FAILURE_POLICIES`). A spelling in
    ``deprecated`` (old name -> new name) is accepted for one release: it returns the
    new name and warns (``DeprecationWarning``) once per process and spelling."""
    if isinstance(value, str):
        if value in allowed:
            return str.__str__(value)
        if deprecated is not None and value in deprecated:
            new = deprecated[value]
            if (what, value) not in _warned_aliases:
                _warned_aliases.add((what, value))
                warnings.warn(
                    f"{what}={value!r} is deprecated and goes in the next release; "
                    f"spell it {new!r} (one failure-policy vocabulary: {', '.join(allowed)})",
                    DeprecationWarning,
                    stacklevel=3,
                )
            return new
    raise ConfigurationError(f"{what} must be one of {', '.join(allowed)}, got {value!r}")

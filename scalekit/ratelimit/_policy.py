"""Rates, multi-window policies and tiers.

``Rate.parse("60/hour")`` is one window; ``Policy.parse("60/hour; 1000/day")`` is
several windows applied all-or-nothing; a mapping ``{"free": "20/minute",
"paid": "100/minute"}`` is a set of tiers chosen per call.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeAlias

from scalekit import _validate
from scalekit.errors import ConfigurationError

__all__ = ["Policy", "PolicyLike", "Rate", "Tiers", "as_policy", "as_tiers"]

_UNITS: dict[str, float] = {}
for _names, _unit_seconds in (
    (("s", "sec", "secs", "second", "seconds"), 1.0),
    (("m", "min", "mins", "minute", "minutes"), 60.0),
    (("h", "hr", "hrs", "hour", "hours"), 3600.0),
    (("d", "day", "days"), 86400.0),
    (("w", "week", "weeks"), 604800.0),
):
    for _name in _names:
        _UNITS[_name] = _unit_seconds

_UNIT_NAMES = {1.0: "second", 60.0: "minute", 3600.0: "hour", 86400.0: "day", 604800.0: "week"}

# ASCII only: \d would also take Arabic-Indic digits and \s a non-breaking space
_RATE_RE = re.compile(
    r"^\s*(?P<limit>[+-]?\d+)\s*(?:/|per)\s*(?P<count>\d+(?:\.\d+)?)?\s*(?P<unit>[a-z]+)\s*$",
    re.IGNORECASE | re.ASCII,
)

_ALLOWED_FORMS = (
    "'<limit>/<unit>' or '<limit>/<n> <unit>' (e.g. '60/hour', '100/5 minutes', '10 per 30s'), "
    "unit one of s, second, m, minute, h, hour, d, day, w, week"
)


def _seconds(value: object, what: str) -> float:
    """A positive duration in seconds (sampling's estimate imports this name)."""
    return _validate.duration(value, what)


def _microseconds(value: object) -> int:
    """A period as whole microseconds (the resolution of every decision and of Redis
    ``TIME``), validated once: positive, at least 1 us, at most ``MAX_SECONDS``."""
    seconds = _validate.duration(value, "a rate's period")
    us = round(seconds * 1_000_000)
    if us < 1:
        raise ConfigurationError(f"a rate's period must be at least 1 microsecond, got {value!r}")
    return us


def _format_seconds(us: int) -> str:
    """Exact decimal seconds for a whole number of microseconds ("3600.0004")."""
    whole, frac = divmod(us, 1_000_000)
    return f"{whole}.{frac:06d}".rstrip("0").rstrip(".") if frac else str(whole)


@dataclass(frozen=True, slots=True)
class Rate:
    """``limit`` units per ``period`` seconds; ``burst`` for the bucket algorithms.

    ``burst`` is the bucket's capacity for ``token_bucket`` and ``gcra`` (how many
    can be spent at once after an idle spell); it defaults to ``limit``. The
    window algorithms ignore it.

    Limits and bursts are at most ``MAX_COUNT`` (10**12) and periods at most
    ``MAX_SECONDS`` (100 years), what Redis can compute with exactly; a period is
    rounded to whole microseconds, the resolution of every decision.
    """

    limit: int
    period: float
    burst: int | None = None

    def __init__(self, limit: int, period: float | timedelta, *, burst: int | None = None) -> None:
        limit = _validate.count(limit, "a rate's limit")
        if burst is not None:
            burst = _validate.count(burst, "burst")
        object.__setattr__(self, "limit", limit)
        object.__setattr__(self, "period", _microseconds(period) / 1_000_000)
        object.__setattr__(self, "burst", burst)

    @property
    def period_us(self) -> int:
        """The period in whole microseconds (what the Redis scripts and keys use)."""
        return round(self.period * 1_000_000)

    @property
    def capacity(self) -> int:
        """The bucket size: ``burst`` if set, else ``limit``."""
        return self.burst if self.burst is not None else self.limit

    @classmethod
    def parse(cls, text: str) -> Rate:
        """Parse ``"60/hour"``, ``"100/5 minutes"``, ``"10 per 30s"``."""
        if not isinstance(text, str):
            raise ConfigurationError(f"a rate must be a string like '60/hour', got {text!r}")
        m = _RATE_RE.match(text) if text.isascii() else None
        if m is None:
            raise ConfigurationError(f"malformed rate {text!r}: expected {_ALLOWED_FORMS}")
        unit = m["unit"].lower()
        if unit not in _UNITS:
            raise ConfigurationError(
                f"unknown unit {m['unit']!r} in rate {text!r}: expected {_ALLOWED_FORMS}"
            )
        limit = int(m["limit"])
        if limit < 1:
            raise ConfigurationError(f"a rate's limit must be >= 1, got {limit} in {text!r}")
        count = float(m["count"]) if m["count"] else 1.0
        if count <= 0:
            raise ConfigurationError(f"a rate's period must be positive, got {text!r}")
        return cls(limit, count * _UNITS[unit])

    def __str__(self) -> str:
        p = self.period
        for seconds in sorted(_UNIT_NAMES, reverse=True):
            n = p / seconds
            if n >= 1 and n == int(n):
                unit = _UNIT_NAMES[seconds]
                return f"{self.limit}/{unit}" if n == 1 else f"{self.limit}/{int(n)} {unit}s"
        return f"{self.limit}/{_format_seconds(self.period_us)} seconds"


@dataclass(frozen=True, slots=True)
class Policy:
    """One or more windows, applied all-or-nothing; ``name`` labels it in headers."""

    rates: tuple[Rate, ...]
    name: str

    def __init__(self, rates: Iterable[Rate | str], name: str | None = None) -> None:
        parsed = tuple(r if isinstance(r, Rate) else Rate.parse(r) for r in rates)
        if not parsed:
            raise ConfigurationError("a policy needs at least one rate, got none")
        periods = [r.period for r in parsed]
        if len(set(periods)) != len(periods):
            raise ConfigurationError(
                f"a policy may have one rate per period; got {', '.join(map(str, parsed))}"
            )
        parsed = tuple(sorted(parsed, key=lambda r: r.period))
        if name is None:
            name = "; ".join(map(str, parsed))
        name = _validate.name(name, "a policy name")
        object.__setattr__(self, "rates", parsed)
        object.__setattr__(self, "name", name)

    @classmethod
    def parse(cls, text: str, name: str | None = None) -> Policy:
        """Parse ``"60/hour; 1000/day"`` (``;`` or ``,`` between windows)."""
        if not isinstance(text, str):
            raise ConfigurationError(
                f"a policy must be a string like '60/hour; 1000/day', got {text!r}"
            )
        parts = [p for p in re.split(r"[;,]", text) if p.strip()]
        if not parts:
            raise ConfigurationError(f"empty policy {text!r}: expected {_ALLOWED_FORMS}")
        return cls([Rate.parse(p) for p in parts], name=name)

    def __str__(self) -> str:
        return self.name


PolicyLike: TypeAlias = Policy | Rate | str
Tiers: TypeAlias = Mapping[str, PolicyLike]


def as_policy(value: PolicyLike) -> Policy:
    """Coerce a ``Policy``, ``Rate`` or rate string into a ``Policy``."""
    if isinstance(value, Policy):
        return value
    if isinstance(value, Rate):
        return Policy([value])
    if isinstance(value, str):
        return Policy.parse(value)
    raise ConfigurationError(
        f"a policy must be a Policy, a Rate, a string like '60/hour; 1000/day' "
        f"or a mapping tier -> policy, got {value!r}"
    )


def as_tiers(value: Mapping[str, PolicyLike]) -> dict[str, Policy]:
    """Coerce a tier mapping; tier names must be non-empty strings."""
    if not value:
        raise ConfigurationError("a tier mapping needs at least one tier")
    tiers: dict[str, Policy] = {}
    for tier, pol in value.items():
        tier = _validate.name(tier, "a tier name")
        p = as_policy(pol)
        if isinstance(pol, str | Rate):
            p = Policy(p.rates, name=tier)
        tiers[tier] = p
    return tiers

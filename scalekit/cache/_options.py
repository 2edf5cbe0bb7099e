"""The cache's options, statistics and argument checks (no I/O, no state)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import cast

from scalekit import _validate
from scalekit.cache._freshness import _duration
from scalekit.errors import ConfigurationError

__all__ = ["CacheOptions", "CacheStats"]


def _seconds(value: float | timedelta | None, what: str) -> float:
    """:func:`~scalekit.cache._freshness._duration` (``None`` is refused there)."""
    return _duration(cast("float | timedelta", value), what)


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheOptions:
    """How values are cached; validated at construction (durations accept ``timedelta``).

    - ``ttl``: seconds a value is fresh (``>= 0``).
    - ``stale_while_revalidate`` / ``stale_if_error``: RFC 5861 windows after expiry.
    - ``beta``: XFetch early-refresh factor (``0`` disables early refresh).
    - ``cache_none``: store ``None`` results (for ``negative_ttl``).
    - ``cache_exceptions``: exception types (subclasses of ``Exception``) to store and
      re-raise for ``negative_ttl``; ``()`` stores none.
    - ``negative_ttl``: lifetime of negative entries; ``None`` means ``ttl``.
    - ``lock_timeout``: the longest a caller waits for another caller's load (real
      seconds, ``> 0``) before loading itself; ``None`` waits for ever.
    """

    ttl: float | timedelta = 300.0
    stale_while_revalidate: float | timedelta = 0.0
    stale_if_error: float | timedelta = 0.0
    beta: float = 1.0
    cache_none: bool = False
    cache_exceptions: tuple[type[Exception], ...] = ()
    negative_ttl: float | timedelta | None = None
    lock_timeout: float | timedelta | None = 10.0
    # normalised seconds, filled by __post_init__
    _ttl: float = field(init=False, repr=False, compare=False, default=0.0)
    _swr: float = field(init=False, repr=False, compare=False, default=0.0)
    _sie: float = field(init=False, repr=False, compare=False, default=0.0)
    _neg: float = field(init=False, repr=False, compare=False, default=0.0)
    _wait: float | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        s = object.__setattr__
        s(self, "_ttl", _seconds(self.ttl, "ttl"))
        s(self, "_swr", _seconds(self.stale_while_revalidate, "stale_while_revalidate"))
        s(self, "_sie", _seconds(self.stale_if_error, "stale_if_error"))
        neg = self.negative_ttl
        s(self, "_neg", self._ttl if neg is None else _seconds(neg, "negative_ttl"))
        beta = self.beta
        if isinstance(beta, bool) or not isinstance(beta, int | float) or not 0 <= beta < math.inf:
            raise ConfigurationError(f"beta must be a finite number >= 0, got {beta!r}")
        if not isinstance(self.cache_none, bool):
            raise ConfigurationError(f"cache_none must be a bool, got {self.cache_none!r}")
        excs = self.cache_exceptions
        if isinstance(excs, type):
            excs = (excs,)
            s(self, "cache_exceptions", excs)
        if not isinstance(excs, tuple) or not all(
            isinstance(t, type) and issubclass(t, Exception) for t in excs
        ):
            raise ConfigurationError(
                f"cache_exceptions must be a tuple of Exception subclasses "
                f"(e.g. (NotFound,)), got {self.cache_exceptions!r}"
            )
        wait = self.lock_timeout
        if wait is None:
            s(self, "_wait", None)
        else:
            w = _seconds(wait, "lock_timeout")
            if w <= 0:
                raise ConfigurationError(
                    f"lock_timeout must be > 0 seconds or None (wait for ever), got {wait!r}"
                )
            s(self, "_wait", w)


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters of one :class:`~scalekit.cache.Cache`, read from the observability
    registry (see :mod:`scalekit.cache._metrics`)."""

    name: str
    #: fresh values served (early-refresh reads included)
    hits: int
    #: reads that needed a foreground load
    misses: int
    #: stale values served (while a refresh ran, or after a failed load)
    stale_served: int
    #: loader runs, background refreshes included
    loads: int
    load_errors: int
    #: seconds spent in loaders, on the cache clock
    load_time_total: float
    #: entries dropped by the backend's bound
    evictions: int
    #: entries that could not be decoded (served as misses); remote backends only
    decode_errors: int = 0
    #: backend calls that failed (the cache loaded or skipped storing instead)
    backend_errors: int = 0
    #: callers that waited for a load another caller of the same key ran
    coalesced: int = 0
    #: invalidations applied (delete, tags, namespace, clear)
    invalidations: int = 0
    #: invalidations queued while the backend failed (``on_invalidation_error="defer"``)
    invalidations_deferred: int = 0
    #: the same counters per namespace (a ``@cached`` function's; ``"-"``: direct
    #: calls and cache-wide figures), each a ``CacheStats`` with no ``namespaces`` of
    #: its own; they add up to this object's (see :mod:`scalekit.cache._metrics`)
    namespaces: dict[str, CacheStats] = field(default_factory=dict)


#: the fields of CacheStats that add up over namespaces
SUMMED = tuple(f.name for f in fields(CacheStats) if f.name not in ("name", "namespaces"))


check_key = _validate.key


def check_tags(tags: Iterable[str]) -> frozenset[str]:
    """``tags`` as a frozenset of non-empty strings (a lone ``str`` is refused)."""
    if isinstance(tags, str):
        raise ConfigurationError(f"tags must be a collection of str, e.g. ({tags!r},)")
    tagset = frozenset(tags)
    for tag in tagset:
        if not isinstance(tag, str) or not tag:
            raise ConfigurationError(f"every tag must be a non-empty str, got {tag!r}")
    return tagset


def check_margin(margin: float | None) -> float:
    """A refresh's ``margin`` in seconds (``None``: infinite, always load)."""
    if margin is None:
        return math.inf
    if isinstance(margin, bool) or not isinstance(margin, int | float) or not margin >= 0:
        raise ConfigurationError(f"margin must be a number of seconds >= 0 or None, got {margin!r}")
    return float(margin)

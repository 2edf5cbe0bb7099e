"""Pure freshness rules of the TTL cache: entry metadata and ``now`` in, a decision out.

No I/O, no locks, no clock reads: ``now`` is always a parameter, and so is the one
random number XFetch needs. The memory and Redis caches (and their sync and async
drivers) call these functions and act on the answer, as tenacity's ``iter()``
returns actions for its retry loop to carry out.

The life of an entry
--------------------
Every duration is in seconds on the clock's scale; ``E = stored_at + ttl`` is the
*expiry*. Intervals are half-open (a boundary belongs to the later state)::

    stored_at           E - gap         E             E + swr           E + sie
        |------ FRESH -----|-- EARLY ---|-- STALE_REVALIDATE --|-- STALE_IF_ERROR_ONLY --|-- EXPIRED
                           (XFetch)

- ``FRESH`` while ``now < E``: serve the value.
- ``FRESH_EARLY_REFRESH``: still fresh, but this request was chosen (XFetch, see
  below) to refresh early: serve the value *and* start one background refresh.
- ``STALE_REVALIDATE`` while ``E <= now < E + stale_while_revalidate``
  (RFC 5861 ``stale-while-revalidate``): serve the stale value and start ONE
  background refresh (the driver's single-flight makes it one).
- ``STALE_IF_ERROR_ONLY`` while ``E + swr <= now < E + stale_if_error``
  (RFC 5861 ``stale-if-error``; exists only when ``sie > swr``): the caller must
  load in the foreground; if that load fails, it may serve the stale value.
- ``EXPIRED`` from ``E + max(swr, sie)`` on: nothing is servable; load.

Both stale windows are measured from the expiry ``E``, as in RFC 5861, so they
overlap rather than follow each other: ``swr=60, sie=300`` serves stale while
revalidating for one minute after expiry and, after that, on errors only, until
five minutes after expiry. ``sie <= swr`` adds nothing (during the
stale-while-revalidate window a stale value is served anyway).

A ``now`` before ``stored_at`` (clock skew between writers) counts as age below
zero, i.e. fresh. A NaN ``now`` compares false everywhere and yields ``EXPIRED``.

XFetch (probabilistic early refresh)
------------------------------------
Vattani, Chierichetti and Lowenstein, "Optimal Probabilistic Cache Stampede
Prevention" (VLDB 2015): each read of a fresh entry refreshes early iff ::

    now - delta * beta * ln(rand) >= E          (rand uniform in (0, 1])

where ``delta`` is the measured recompute time stored with the entry. As
``-ln(rand)`` is exponentially distributed with mean 1, a read at time ``t < E``
refreshes early with probability ``exp(-(E - t) / (delta * beta))``: negligible
long before expiry, rising to 1 as ``t`` approaches ``E``, and scaled by how
long a recompute takes, so that one reader recomputes shortly before expiry and
the rest keep reading the fresh value (no stampede at ``E``). ``beta > 1``
favours earlier refreshes, ``beta < 1`` later ones; ``beta = 0`` or ``delta = 0``
disables early refresh (``classify`` is then deterministic).

``rand`` is passed in to keep this module pure: the driver passes
``1.0 - rng.random()`` (which lies in ``(0, 1]``; ``random.random()`` alone lies
in ``[0, 1)``). ``rand = 0`` is accepted as the limit ``ln(rand) -> -inf``:
refresh early whenever early refresh is enabled. ``rand = 1`` never refreshes
early and is the default.

Refresh-ahead
-------------
For precomputed values (a job recomputes a trending list every five minutes so
that no reader ever computes it) :func:`next_refresh_at` says when the job should
run again: ``refresh_ahead`` seconds before expiry.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from scalekit import _validate
from scalekit.errors import ConfigurationError

__all__ = [
    "MIN_REMAINING_TTL",
    "EntryMeta",
    "Freshness",
    "classify",
    "next_refresh_at",
    "plan_after_load_failure",
    "remaining_ttl",
]

#: The smallest TTL :func:`remaining_ttl` returns (1 ms): Redis rejects
#: ``SET ... PX 0`` and negative expiries, and a cache write always sets one.
MIN_REMAINING_TTL = 0.001


class Freshness(StrEnum):
    """What a read should do with a cached entry. See the module docstring.

    Members are declared in the order an entry passes through them as time goes
    on (for a fixed ``rand``, ``classify`` never goes back to an earlier one), and
    their values are short lowercase names usable as metric labels.
    """

    #: Serve the value.
    FRESH = "fresh"
    #: Serve the value and start one background refresh (XFetch chose this read).
    FRESH_EARLY_REFRESH = "fresh_early_refresh"
    #: Expired but within ``stale_while_revalidate``: serve it and start one
    #: background refresh.
    STALE_REVALIDATE = "stale_revalidate"
    #: Expired beyond ``stale_while_revalidate`` but within ``stale_if_error``:
    #: load in the foreground; serve the stale value only if that load fails.
    STALE_IF_ERROR_ONLY = "stale_if_error_only"
    #: Nothing servable: load in the foreground; a failure propagates.
    EXPIRED = "expired"

    @property
    def servable(self) -> bool:
        """The cached value may be returned without waiting for a load."""
        return self in _SERVABLE

    @property
    def needs_refresh(self) -> bool:
        """A background refresh should be started (the value is still served)."""
        return self in _BACKGROUND

    @property
    def must_load(self) -> bool:
        """The caller has to load in the foreground before it can answer."""
        return self in _MUST_LOAD


_SERVABLE = frozenset({Freshness.FRESH, Freshness.FRESH_EARLY_REFRESH, Freshness.STALE_REVALIDATE})
_BACKGROUND = frozenset({Freshness.FRESH_EARLY_REFRESH, Freshness.STALE_REVALIDATE})
_MUST_LOAD = frozenset({Freshness.STALE_IF_ERROR_ONLY, Freshness.EXPIRED})


def _duration(value: float | timedelta, what: str) -> float:
    """``value`` as finite seconds in ``[0, MAX_SECONDS]`` (the one validation module's
    :func:`~scalekit._validate.duration`), or a ConfigurationError."""
    return _validate.duration(value, what, allow_zero=True) + 0.0  # -0.0 -> 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class EntryMeta:
    """What the cache stores next to a value to decide how fresh it is.

    - ``stored_at``: when the value was written (the cache clock's ``now``; on
      Redis, the server's ``TIME``).
    - ``ttl``: the value is fresh for ``ttl`` seconds: while
      ``now < stored_at + ttl``. ``0`` is allowed: never fresh, but still
      servable stale if the windows below say so (HTTP's
      ``max-age=0, stale-while-revalidate=...``).
    - ``stale_while_revalidate``: for this many seconds after expiry a stale value
      may be served while one background refresh runs.
    - ``stale_if_error``: for this many seconds after expiry a stale value may be
      served if the refresh or load fails.
    - ``delta``: how long computing the value took (seconds), measured by the
      loader and stored with it; scales XFetch's early refresh (``0`` disables it).
    - ``generation``: a counter bumped on every write of the key; a refresh writes
      back only if the generation it read is still current, so a slow refresh
      never overwrites a newer value or an invalidation.

    Construction validates every field (a finite ``stored_at``; finite durations
    ``>= 0``; an ``int`` generation ``>= 0``) and raises
    :class:`~scalekit.errors.ConfigurationError` otherwise. Use
    :meth:`create` to pass durations as ``timedelta``.
    """

    stored_at: float
    ttl: float
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0
    delta: float = 0.0
    generation: int = 0

    def __post_init__(self) -> None:
        stored_at = self.stored_at
        if isinstance(stored_at, bool) or not isinstance(stored_at, int | float):
            raise ConfigurationError(
                f"EntryMeta.stored_at must be a time in seconds (int, float), got {stored_at!r}"
            )
        if not math.isfinite(stored_at):
            raise ConfigurationError(
                f"EntryMeta.stored_at must be a finite time in seconds, got {stored_at!r}"
            )
        object.__setattr__(self, "stored_at", float(stored_at))
        for name in ("ttl", "stale_while_revalidate", "stale_if_error", "delta"):
            object.__setattr__(self, name, _duration(getattr(self, name), f"EntryMeta.{name}"))
        generation = self.generation
        if isinstance(generation, bool) or not isinstance(generation, int) or generation < 0:
            raise ConfigurationError(
                f"EntryMeta.generation must be an int >= 0, got {generation!r}"
            )

    @classmethod
    def create(
        cls,
        now: float,
        *,
        ttl: float | timedelta,
        stale_while_revalidate: float | timedelta = 0.0,
        stale_if_error: float | timedelta = 0.0,
        delta: float | timedelta = 0.0,
        generation: int = 0,
    ) -> EntryMeta:
        """The metadata of a value written at ``now``; durations may be ``timedelta``."""
        return cls(
            stored_at=now,
            ttl=_duration(ttl, "ttl"),
            stale_while_revalidate=_duration(stale_while_revalidate, "stale_while_revalidate"),
            stale_if_error=_duration(stale_if_error, "stale_if_error"),
            delta=_duration(delta, "delta"),
            generation=generation,
        )

    @property
    def expires_at(self) -> float:
        """``stored_at + ttl``: the first instant at which the value is not fresh."""
        return self.stored_at + self.ttl

    @property
    def retain_until(self) -> float:
        """The first instant at which nothing is servable (``EXPIRED``):
        ``expires_at + max(stale_while_revalidate, stale_if_error)``. A store may
        drop the entry from then on."""
        return self.stored_at + self.ttl + max(self.stale_while_revalidate, self.stale_if_error)


def classify(meta: EntryMeta, now: float, *, beta: float = 1.0, rand: float = 1.0) -> Freshness:
    """How fresh ``meta``'s value is at ``now``; see the module docstring.

    ``beta`` (finite, ``>= 0``) scales XFetch's early refresh; ``rand`` is a
    uniform random number in ``(0, 1]`` (pass ``1.0 - rng.random()``; ``0`` is
    accepted as the limit, ``1`` never refreshes early). Either out of range
    raises :class:`~scalekit.errors.ConfigurationError`.
    """
    if not (0.0 <= beta < math.inf):
        raise ConfigurationError(f"beta must be a finite number >= 0, got {beta!r}")
    if not (0.0 <= rand <= 1.0):
        raise ConfigurationError(
            f"rand must be a uniform random number in (0, 1] (e.g. 1.0 - random.random()), "
            f"got {rand!r}"
        )
    expiry = meta.stored_at + meta.ttl
    if now < expiry:
        scale = meta.delta * beta
        # XFetch: now - delta * beta * ln(rand) >= expiry. ln(0) is -inf: refresh.
        if scale > 0.0 and (rand == 0.0 or now - scale * math.log(rand) >= expiry):
            return Freshness.FRESH_EARLY_REFRESH
        return Freshness.FRESH
    if now < expiry + meta.stale_while_revalidate:
        return Freshness.STALE_REVALIDATE
    if now < expiry + meta.stale_if_error:
        return Freshness.STALE_IF_ERROR_ONLY
    return Freshness.EXPIRED


#: members as module constants: ``Freshness.FRESH`` is a slow class-attribute lookup
_FRESH = Freshness.FRESH
_EARLY = Freshness.FRESH_EARLY_REFRESH
_STALE = Freshness.STALE_REVALIDATE
_IF_ERROR = Freshness.STALE_IF_ERROR_ONLY
_EXPIRED = Freshness.EXPIRED

#: ``-ln(rand)`` is at most ``-ln(2**-53) = 36.74`` for ``rand`` in ``[2**-53, 1]``,
#: so XFetch cannot choose a read more than this many ``delta * beta`` before expiry
_XFETCH_REACH = 40.0


def classify_unchecked(
    meta: EntryMeta, now: float, beta: float, draw: Callable[[], float]
) -> Freshness:
    """:func:`classify` without argument checks, for the cache's read path.

    ``beta`` must already be valid (finite, ``>= 0``; ``CacheOptions`` checks it
    once) and ``draw()`` must return a ``rand`` in ``[2**-53, 1]`` (as
    ``1.0 - random.random()`` does). It is called only when XFetch could choose
    this read: the entry is fresh, early refresh is enabled (``delta * beta > 0``)
    and ``now`` is within ``40 * delta * beta`` of expiry. The answer equals
    ``classify(meta, now, beta=beta, rand=draw())``: beyond that reach
    ``now - delta * beta * ln(rand) < expiry`` for every such ``rand`` (float
    addition and multiplication round monotonically).
    """
    expiry = meta.stored_at + meta.ttl
    if now < expiry:
        scale = meta.delta * beta
        if scale > 0.0 and now + scale * _XFETCH_REACH >= expiry:
            rand = draw()
            if rand == 0.0 or now - scale * math.log(rand) >= expiry:
                return _EARLY
        return _FRESH
    if now < expiry + meta.stale_while_revalidate:
        return _STALE
    if now < expiry + meta.stale_if_error:
        return _IF_ERROR
    return _EXPIRED


def plan_after_load_failure(meta: EntryMeta, now: float) -> bool:
    """Whether the cached value may be served after a refresh or load failed at ``now``.

    True while ``now < retain_until``, i.e. in every state but ``EXPIRED``: a
    failed background refresh of a fresh (or early-refreshed) value keeps
    serving it; within ``stale_while_revalidate`` the stale value stays servable
    anyway; within ``stale_if_error`` serving stale on a failure is what the
    window is for. Pass the time of the failure, not the time the request
    started, so that a value whose windows ran out during a slow load is not
    served.
    """
    expiry = meta.stored_at + meta.ttl
    return now < expiry + max(meta.stale_while_revalidate, meta.stale_if_error)


def remaining_ttl(meta: EntryMeta, now: float) -> float:
    """Seconds the stored entry must live from ``now``: the storage TTL to set.

    ``retain_until - now`` (the value must outlive both stale windows, not just
    ``ttl``), and at least :data:`MIN_REMAINING_TTL` (1 ms), since Redis refuses
    expiries ``<= 0``. Convert to milliseconds rounding *up* (``math.ceil``) so
    the key never disappears before the last instant it is servable.
    """
    return max(meta.retain_until - now, MIN_REMAINING_TTL)


def next_refresh_at(meta: EntryMeta, *, refresh_ahead: float | timedelta) -> float:
    """When a refresh-ahead job should recompute ``meta``'s value.

    ``stored_at + ttl - refresh_ahead``, but not before ``stored_at`` (a
    ``refresh_ahead`` longer than ``ttl`` means "refresh right away"). With
    ``refresh_ahead`` at least the recompute time (``meta.delta``), the new value
    is written before the old one expires, so readers never see a miss.
    ``refresh_ahead`` must be a finite duration ``>= 0`` (seconds or ``timedelta``).
    """
    ahead = _duration(refresh_ahead, "refresh_ahead")
    return max(meta.stored_at + meta.ttl - ahead, meta.stored_at)

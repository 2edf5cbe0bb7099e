"""The cache driver: :class:`Cache`, shared by ``@cached`` and direct use.

All freshness maths is :mod:`scalekit.cache.freshness` (pure); this module only
locks, runs loaders, starts background refreshes and talks to a backend
(:class:`CacheBackend`; today :class:`~scalekit.cache.memory.MemoryCacheBackend`).

Reads
-----
``get_or_load`` / ``aget_or_load`` read the entry and call
:func:`~scalekit.cache.freshness.classify` with ``rand = 1.0 - rng.random()``:

- ``FRESH``: serve (a *hit*).
- ``FRESH_EARLY_REFRESH`` (XFetch chose this read): serve (a hit) and start one
  background refresh.
- ``STALE_REVALIDATE``: serve the stale value (*stale_served*) and start one
  background refresh.
- ``STALE_IF_ERROR_ONLY`` / ``EXPIRED`` / no entry: a *miss*; load in the
  foreground. If the load fails and
  :func:`~scalekit.cache.freshness.plan_after_load_failure` allows it (measured at
  the time of the failure), the stale value is served instead (*stale_served*) and
  the error is counted in *load_errors* only.

The recompute time of every load is measured on the cache clock and stored as
``EntryMeta.delta``, which scales XFetch.

Single-flight (stampede protection)
-----------------------------------
Inside one process, concurrent callers of one key share one load, for threads and
for asyncio tasks (per event loop). Background refreshes use the same flights, so
a foreground caller that arrives during a refresh waits for it rather than
starting a second load.

- Async: the load runs as its own task; every caller (the one that started it
  included) awaits it through :func:`asyncio.shield`. Cancelling a caller cancels
  only that caller's wait: the load goes on, stores its value and answers the
  other waiters. (Chosen over "retry by the next waiter": no work is thrown away,
  and nothing depends on who happened to arrive first.) A load all of whose
  callers were cancelled still completes and fills the cache.
- Sync: the first thread runs the loader itself; the others wait on an
  :class:`threading.Event`. If the leading thread dies with a ``BaseException``
  (``KeyboardInterrupt``, ``SystemExit``), waiters are released and retry.
- Waiters wait at most ``lock_timeout`` seconds of *real* time (a bound against a
  hung loader, not a scheduling decision, so it does not read ``clock=``); then
  each loads by itself, without single-flight, and its value is stored as usual.
  ``lock_timeout=None`` waits for ever.
- A loader's exception is shared by all the callers of that flight (the same
  exception instance is raised in each of them).
- Before a foreground load runs, the entry is read once more: a caller whose
  read missed just before another flight stored its value then uses that value
  instead of loading again (double-checked, so "one load per cold key" holds
  even for threads preempted between their read and joining the flight).

Background refresh
------------------
- Async: a task on the running loop (strong references are kept until it ends).
- Sync: a daemon thread per refresh; single-flight bounds it to one per key. (A
  small executor would bound the total, but its workers are joined at interpreter
  exit, and a stuck loader would then block shutdown.)
- A failed background refresh is counted (*load_errors*) and logged at DEBUG; the
  entry is left alone, so the stale value keeps being served until its windows
  run out. :meth:`Cache.drain` / :meth:`Cache.adrain` wait for refreshes to end
  (shutdown, tests).

Invalidation
------------
``delete(key)``, ``invalidate_tags(tags)``, ``invalidate_namespace(ns, version)``
and ``clear()``. Every load registers a *fill* (the key, its tags and a
generation counter); each invalidation, under the cache lock, removes the matching
entries and bumps the generation of every matching fill in progress. A fill stores
its value only if its generation is unchanged, checked under the same lock, so a
load that began before an invalidation never stores its (possibly old) value after
the invalidation returned. A direct ``set`` invalidates fills of its key the same
way (a write is newer than any load in progress), and a load that stores voids
the loads of the same key that started before it (a waiter past ``lock_timeout``
that loaded by itself is not overwritten by the slower, older load). Only fills in progress are
tracked, so the bookkeeping is bounded by concurrency, not by the key space.
``EntryMeta.generation`` receives a per-cache write counter.

Namespace / version: ``@cached`` keys are ``<prefix>:<namespace>:v<version>:{…}``
(:class:`~scalekit.cache.keys.KeyBuilder`), so bumping ``version=`` abandons every
old key, and :meth:`Cache.invalidate_namespace` drops them explicitly.

Negative caching
----------------
Off by default. ``cache_none=True`` stores ``None`` results and
``cache_exceptions=(NotFound, …)`` stores those exceptions, both for
``negative_ttl`` seconds (default: ``ttl``) without stale windows; a cached
exception is re-raised (the same instance) on later reads. A failure never
replaces a value that :func:`plan_after_load_failure` still allows serving:
the stale value wins.

Metrics
-------
:meth:`Cache.stats` returns :class:`CacheStats`: hits (fresh values served,
early-refresh reads included), misses (foreground loads needed), stale_served,
loads (loader runs, background refreshes included), load_errors, load_time_total
(seconds on the cache clock), evictions (from the backend's bound),
decode_errors, backend_errors, coalesced (callers that waited for another
caller's load) and invalidations, and the same per namespace in
``CacheStats.namespaces``. Each counter but evictions is a native counter of
:mod:`scalekit.observability` (``scalekit_cache_<what>_total``, labelled ``cache``
and ``namespace``: a ``@cached`` function's namespace, ``"-"`` for direct calls;
see :mod:`scalekit.cache._metrics`); ``stats()`` reads them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import threading
import time
from collections.abc import Awaitable, Callable, Generator, Iterable
from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import Any, Literal, TypeAlias, TypeVar, cast
from urllib.parse import urlsplit

from scalekit import _validate
from scalekit._clock import Clock, as_clock
from scalekit.backends import memory_bound, parse_backend_url
from scalekit.backends._guard import BackendGuard
from scalekit.cache._metrics import CacheCounters, CacheMetrics
from scalekit.cache.backend import (
    AsyncCacheBackend,
    CacheBackend,
    CachedError,
    Entry,
    FencedCacheBackend,
    FillTicket,
    RemoteError,
)
from scalekit.cache.freshness import (
    EntryMeta,
    Freshness,
    _duration,
    classify,
    classify_unchecked,
    plan_after_load_failure,
    remaining_ttl,
)
from scalekit.cache.keys import head as _key_head
from scalekit.cache.memory import MemoryCacheBackend
from scalekit.errors import BackendDataError, BackendError, ConfigurationError, SerializationError
from scalekit.observability._metrics import Counter
from scalekit.ratelimit._startup import aping, ping
from scalekit.serde import JsonSerializer, MsgpackSerializer, Serializer

__all__ = [
    "Cache",
    "CacheBackend",
    "CacheOptions",
    "CacheStats",
    "default_cache",
]

log = logging.getLogger("scalekit.cache")

T = TypeVar("T")
R = TypeVar("R")

#: a flow of the fill engine: yields ``(step, argument)``, receives the step's
#: ``(result, exception)``, returns its outcome (see ``Cache._run``)
_Flow: TypeAlias = Generator[tuple[str, Any], Any, R]


def _seconds(value: float | timedelta | None, what: str) -> float:
    """:func:`~scalekit.cache.freshness._duration` (``None`` is refused there)."""
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
    """Counters of one :class:`Cache` (see the :mod:`scalekit.cache.core` docstring)."""

    name: str
    hits: int
    misses: int
    stale_served: int
    loads: int
    load_errors: int
    load_time_total: float
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
_SUMMED = tuple(f.name for f in fields(CacheStats) if f.name not in ("name", "namespaces"))


class _Fill:
    """A load in progress; invalidations bump ``generation``. ``heads``: the
    namespace heads of a ``@cached`` key; ``hint``: the type values decode to."""

    __slots__ = ("delta", "generation", "heads", "hint", "key", "m", "seq", "tags")

    def __init__(
        self,
        key: str,
        tags: frozenset[str],
        seq: int,
        heads: tuple[str, ...],
        hint: Any,
        m: CacheCounters,
    ) -> None:
        self.m = m  # the counters of the caller's namespace
        self.key = key
        self.tags = tags
        self.seq = seq
        self.heads = heads
        self.hint = hint
        self.generation = 0
        self.delta = 0.0  # the load's duration, once it finished


class _Outcome:
    __slots__ = ("error", "tb", "value")

    def __init__(self, value: object = None, error: BaseException | None = None) -> None:
        self.value = value
        self.error = error
        self.tb = None if error is None else error.__traceback__


class _SyncFlight:
    __slots__ = ("abandoned", "done", "outcome")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.outcome: _Outcome | None = None
        self.abandoned = False


_REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")


def _backend_from(
    backend: str | CacheBackend,
    clock: Clock,
    max_entries: int | None,
    serializer: str | Serializer,
    clock_given: bool,
) -> CacheBackend:
    if not isinstance(backend, str):
        if not isinstance(backend, CacheBackend) or not isinstance(backend, AsyncCacheBackend):
            raise ConfigurationError(
                f"backend must be a URL ('memory://', 'redis://...') or a cache backend "
                f"object (get/set/delete/delete_tags/delete_prefix/clear and their "
                f"a-prefixed async twins), got {backend!r}"
            )
        return backend
    parts = urlsplit(backend)
    scheme = parts.scheme
    tiered = scheme.startswith("tiered+")
    if scheme.removeprefix("tiered+") in _REDIS_SCHEMES:
        from scalekit.cache.redis import RedisCacheBackend

        l2 = RedisCacheBackend(
            backend.removeprefix("tiered+"),
            serializer=serializer,
            clock=clock if clock_given else None,
        )
        if not tiered:
            return l2
        from scalekit.cache.tiered import TieredCacheBackend

        return TieredCacheBackend(l2)
    if parts.scheme != "memory":
        raise ConfigurationError(
            f"cache backend URL {backend!r}: scheme {parts.scheme!r} is not supported; "
            f"supported: 'memory://' (optionally 'memory://?max_entries=N'), "
            f"'redis://', 'rediss://', 'unix://', 'redis+cluster://', 'rediss+cluster://' "
            f"(each with a 'tiered+' prefix for a memory L1 in front of Redis)"
        )
    # the one URL grammar: unknown or misspelt options are refused
    _, parsed = parse_backend_url(backend)
    n = memory_bound(parsed).get("max_keys", max_entries)
    return MemoryCacheBackend(max_entries=10_000 if n is None else n, clock=clock)


class Cache:
    """A TTL cache with single-flight loads, stale windows, early refresh and tags.

    :param backend: ``None`` (the default): ``SCALEKIT_REDIS_URL`` when it is set (see
        :mod:`scalekit.config`), else ``"memory://"``. Or ``"memory://"`` (optionally
        ``"memory://?max_entries=N"``), a
        Redis URL (``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://``: a
        :class:`~scalekit.cache.redis.RedisCacheBackend`) or a backend object
        (:class:`~scalekit.cache.backend.CacheBackend`); ``"tiered+redis://..."``
        puts a :class:`~scalekit.cache.tiered.TieredCacheBackend` (memory L1) in front.
    :param name: names the cache in :meth:`stats` and logs.
    :param clock: time source (monotonic by default). A remote backend brings the
        clock its fleet agrees on, which the cache then uses; ``clock=`` given with
        a Redis URL is passed to that backend (tests).
    :param rng: random source for XFetch (``random.Random`` by default).
    :param max_entries: the bound of a ``memory://`` backend (default 10,000).
    :param prefix: the key prefix used by ``@cached`` (see
        :class:`~scalekit.cache.keys.KeyBuilder`).
    :param options: defaults for :meth:`get_or_load`, :meth:`aget_or_load`, :meth:`set`.
    :param serializer: how a Redis URL's backend serializes values (``"json"``,
        ``"msgpack"``, ``"pickle"`` by name only, or a :class:`~scalekit.serde.Serializer`).
    :param backend_cooldown: after a remote backend fails, calls skip it (load
        without caching) for this many seconds before one call probes it again.
    :param on_invalidation_error: what an invalidation (``delete``, ``invalidate_tags``,
        ``invalidate_namespace``, ``clear`` and their async twins) does when a remote
        backend fails: ``"raise"`` (the default) raises
        :class:`~scalekit.errors.BackendError`; ``"defer"`` queues it in memory and
        returns (``False`` / ``0``): a background thread applies the queue, in order,
        as soon as the backend answers (retried with backoff), and until then reads
        skip the backend (they load, as when it is down), so nothing the
        invalidation covers is served. Counted (``invalidations_deferred``); logged
        once per outage.
    :param max_deferred: the bound of that queue; past it, the queue collapses into
        one ``clear()`` of this cache (correct, if costly), counted as deferred too.
    """

    def __init__(
        self,
        backend: str | CacheBackend | None = None,
        *,
        name: str = "cache",
        clock: Clock | Callable[[], float] | None = None,
        rng: random.Random | None = None,
        max_entries: int | None = None,
        prefix: str = "scalekit:cache",
        options: CacheOptions | None = None,
        serializer: str | Serializer = "json",
        backend_cooldown: float = 5.0,
        on_invalidation_error: Literal["raise", "defer"] = "raise",
        max_deferred: int = 10_000,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"name must be a non-empty str, got {name!r}")
        if options is not None and not isinstance(options, CacheOptions):
            raise ConfigurationError(f"options must be a CacheOptions, got {options!r}")
        self.name = name
        self.prefix = prefix
        self.options = options or CacheOptions()
        backend_cooldown = _validate.duration(backend_cooldown, "backend_cooldown")
        if on_invalidation_error not in ("raise", "defer"):
            raise ConfigurationError(
                f"on_invalidation_error must be 'raise' or 'defer', got {on_invalidation_error!r}"
            )
        self._defer = on_invalidation_error == "defer"
        self._max_deferred = _validate.count(max_deferred, "max_deferred")
        self._deferred: list[tuple[str, tuple[Any, ...]]] = []
        self._deferred_done = threading.Condition(threading.Lock())
        self._retrier: threading.Thread | None = None
        #: first pause before a deferred invalidation is tried again (doubles, capped)
        self._retry_first = min(0.05, float(backend_cooldown) or 0.05)
        self._retry_max = max(float(backend_cooldown), self._retry_first)
        self._clock = as_clock(clock)
        self._rng = rng or random.Random()
        if backend is None:  # a cache in each process's memory is a fine default
            from scalekit.config import default_backend_url

            backend = default_backend_url(fallback="memory://")
        self.backend = _backend_from(
            backend, self._clock, max_entries, serializer, clock_given=clock is not None
        )
        #: True for an in-process backend (no I/O: called under the lock, from async
        #: code directly); False for a fleet-shared one (fenced fills, async twins)
        self._local: bool = bool(getattr(self.backend, "local", True))
        if not self._local:
            self._clock = cast(FencedCacheBackend, self.backend).clock
        # one counter set per namespace; ``_m``: direct calls' and the cache-wide ones
        self._metrics = CacheMetrics(self, name, prefix)
        self._m = m = self._metrics.direct
        self._guard = _CacheGuard(
            name, float(backend_cooldown), self._clock.now, kind="cache", logger=log
        )
        self._guard.counter = m.backend_errors
        self._guard.deferred = self._deferred
        # a remote backend counts the entries it cannot decode on this cache's counter
        previous = getattr(self.backend, "decode_counter", None)
        if isinstance(previous, Counter):
            if previous.value:
                m.decode_errors.add(previous.value)
            cast(Any, self.backend).decode_counter = m.decode_errors
        self._lock = threading.Lock()
        self._fills: set[_Fill] = set()
        self._fill_seq = 0
        self._writes = 0
        self._sync_flights: dict[str, _SyncFlight] = {}
        self._async_flights: dict[tuple[asyncio.AbstractEventLoop, str], asyncio.Task[_Outcome]]
        self._async_flights = {}
        self._tasks: set[asyncio.Task[_Outcome]] = set()
        self._threads: set[threading.Thread] = set()
        # hits are counted without the lock: next() of Counter.tick (an
        # itertools.count) is one C call, atomic under the GIL
        self._hit_count = m.hits.tick
        self._warned = False  # a value that cannot be serialized is logged once at WARNING

    def __repr__(self) -> str:
        return f"Cache(name={self.name!r}, backend={self.backend!r})"

    # --- direct access: each operation is one flow, run by the sync or the async driver --

    def get(
        self, key: str, default: T | None = None, *, type_hint: Any = None
    ) -> object | T | None:
        """The servable value of ``key`` (fresh, or stale within
        ``stale_while_revalidate``), else ``default``. Counts a hit or a miss; never
        loads or refreshes. A negative entry for an exception counts as a miss.
        ``type_hint``: the type a remote backend decodes the value to."""
        return self._run(self._get_flow(_key(key), default, type_hint))

    async def aget(
        self, key: str, default: T | None = None, *, type_hint: Any = None
    ) -> object | T | None:
        """:meth:`get` for async code (a remote backend is awaited)."""
        return await self._arun(self._get_flow(_key(key), default, type_hint))

    def _get_flow(self, key: str, default: T | None, hint: Any) -> _Flow[object]:
        entry = yield from self._read(key, hint)
        return self._get_result(entry, default)

    def _get_result(self, entry: tuple[object, EntryMeta] | None, default: T | None) -> object:
        if entry is not None and not isinstance(entry[0], CachedError | RemoteError):
            state = classify(entry[1], self._clock.now())
            if state.servable:
                self._count_served(state)
                return entry[0]
        self._m.misses.inc()
        return default

    def set(
        self,
        key: str,
        value: object,
        *,
        tags: Iterable[str] = (),
        options: CacheOptions | None = None,
    ) -> None:
        """Store ``value`` under ``key`` with ``options`` (default: the cache's).
        Loads of ``key`` in progress (in any process, on a remote backend) will not
        overwrite it. A remote backend's failure raises
        :class:`~scalekit.errors.BackendError`."""
        self._run(self._set_flow(key, value, tags, options))

    async def aset(
        self,
        key: str,
        value: object,
        *,
        tags: Iterable[str] = (),
        options: CacheOptions | None = None,
    ) -> None:
        """:meth:`set` for async code."""
        await self._arun(self._set_flow(key, value, tags, options))

    def _set_flow(
        self, key: str, value: object, tags: Iterable[str], options: CacheOptions | None
    ) -> _Flow[object]:
        key = _key(key)
        opts = options or self.options
        tagset = _check_tags(tags)
        with self._lock:
            self._invalidate_fills(lambda f: f.key == key)
            meta = self._meta(opts, delta=0.0, negative=False)
        ttl = remaining_ttl(meta, meta.stored_at)
        return (yield from self._write_call("set", key, value, meta, ttl, tagset))

    def delete(self, key: str) -> bool:
        """Drop ``key``; loads of it in progress will not store. True if it existed."""
        return bool(self._run(self._delete_flow(key)))

    async def adelete(self, key: str) -> bool:
        """:meth:`delete` for async code."""
        return bool(await self._arun(self._delete_flow(key)))

    def _delete_flow(self, key: str) -> _Flow[Any]:
        key = _key(key)
        return self._invalidate(lambda f: f.key == key, "delete", key)

    def invalidate_tags(self, *tags: str) -> int:
        """Drop every entry tagged with any of ``tags`` (and void matching loads in
        progress); returns how many entries were dropped."""
        return int(self._run(self._tags_flow(tags)))

    async def ainvalidate_tags(self, *tags: str) -> int:
        """:meth:`invalidate_tags` for async code."""
        return int(await self._arun(self._tags_flow(tags)))

    def _tags_flow(self, tags: Iterable[str]) -> _Flow[Any]:
        tagset = _check_tags(tags)
        return self._invalidate(lambda f: not f.tags.isdisjoint(tagset), "delete_tags", tagset)

    def _head(self, namespace: str, version: int | str | None) -> str:
        if not isinstance(namespace, str) or not namespace:
            raise ConfigurationError(f"namespace must be a non-empty str, got {namespace!r}")
        return _key_head(self.prefix, namespace, version)

    def invalidate_namespace(self, namespace: str, version: int | str | None = None) -> int:
        """Drop every ``@cached`` entry of ``namespace`` (of one ``version`` if given)."""
        return int(self._run(self._namespace_flow(namespace, version)))

    async def ainvalidate_namespace(self, namespace: str, version: int | str | None = None) -> int:
        """:meth:`invalidate_namespace` for async code."""
        flow = self._namespace_flow(namespace, version)
        return int(await self._arun(flow))

    def _namespace_flow(self, namespace: str, version: int | str | None) -> _Flow[Any]:
        head = self._head(namespace, version)
        return self._invalidate(lambda f: f.key.startswith(head), "delete_prefix", head)

    def clear(self) -> None:
        """Drop everything; loads in progress will not store."""
        self._run(self._invalidate(_every, "clear"))

    async def aclear(self) -> None:
        """:meth:`clear` for async code."""
        await self._arun(self._invalidate(_every, "clear"))

    def _invalidate(self, match: Callable[[_Fill], bool], op: str, *args: Any) -> _Flow[Any]:
        """An invalidation: void the matching loads in progress, then ``op`` on the
        backend (which, on a remote backend, moves the fences it covers)."""
        with self._lock:
            self._invalidate_fills(match)
        result, exc = yield op, args
        if exc is None:
            self._guard.success()
            self._metrics.covering(op, args).invalidations.inc()
            return result
        if isinstance(exc, BackendError):
            self._guard.failure(exc)
            if self._defer and not self._local:
                self._defer_invalidation(op, args, exc)
                return None if op == "clear" else 0
        raise exc

    # --- deferred invalidations (on_invalidation_error="defer") -------------------------

    def _defer_invalidation(self, op: str, args: tuple[Any, ...], exc: BackendError) -> None:
        """Queue an invalidation the backend refused; start the retrier if needed."""
        self._metrics.covering(op, args).deferred.inc()
        with self._deferred_done:
            queue = self._deferred
            first = not queue
            if queue and queue[0][0] == "clear":
                pass  # a clear is queued: it covers this one
            elif len(queue) >= self._max_deferred or op == "clear":
                queue[:] = [("clear", ())]
            else:
                queue.append((op, args))
            start = self._retrier is None
            if start:
                self._retrier = threading.Thread(
                    target=self._retry_deferred,
                    name=f"scalekit-cache-invalidations[{self.name}]",
                    daemon=True,
                )
        if first:
            log.warning(
                "cache %r: the backend failed (%s); invalidations are queued (at most %d) "
                "and applied when it answers; reads skip it until then",
                self.name,
                exc,
                self._max_deferred,
            )
        if start:
            cast(threading.Thread, self._retrier).start()

    def _retry_deferred(self) -> None:
        """The retrier: applies the queue in order, backing off while the backend fails."""
        pause = self._retry_first
        applied = 0
        while True:
            with self._deferred_done:
                if not self._deferred:
                    self._retrier = None
                    self._guard.success()
                    self._deferred_done.notify_all()
                    break
                op, args = self._deferred[0]
            try:
                getattr(self.backend, op)(*args)
            except BackendDataError:
                pass  # about one key's data: that key's problem, dropped
            except BackendError:
                self._guard.counter.inc()
                self._deferred_done.acquire()
                try:
                    self._deferred_done.wait(pause)
                finally:
                    self._deferred_done.release()
                pause = min(pause * 2, self._retry_max)
                continue
            except Exception:  # never expected: do not spin on it
                log.exception("cache %r: a deferred %s failed; dropped", self.name, op)
            else:
                self._metrics.covering(op, args).invalidations.inc()
                applied += 1
            pause = self._retry_first
            with self._deferred_done:
                if self._deferred and self._deferred[0] == (op, args):
                    del self._deferred[0]
        log.warning(
            "cache %r: the backend answers; %d deferred invalidations applied", self.name, applied
        )

    @property
    def pending_invalidations(self) -> int:
        """Invalidations deferred and not applied yet (``on_invalidation_error="defer"``)."""
        return len(self._deferred)

    def drain_invalidations(self, timeout: float | None = None) -> bool:
        """Wait until the deferred invalidations are applied; True if none is left."""
        with self._deferred_done:
            return self._deferred_done.wait_for(lambda: not self._deferred, timeout)

    def ping(self) -> None:
        """A startup check: raise :class:`~scalekit.errors.BackendError` (naming the
        redacted URL) unless the cache's Redis answers ``PING``; nothing to check on
        ``memory://``. It bypasses the backend guard (a cooldown does not hide an
        unreachable server from the one call asking about it)."""
        ping("cache " + repr(self.name), self._redis())

    async def aping(self) -> None:
        """:meth:`ping` for async code (this event loop's client)."""
        await aping("cache " + repr(self.name), self._redis())

    def _redis(self) -> object:
        """The :class:`~scalekit.backends._redis.RedisBackend` under the backend, if any
        (a tiered backend's is its L2's)."""
        backend: object = self.backend
        backend = getattr(backend, "l2", backend)
        return getattr(backend, "redis", None)

    def stats(self) -> CacheStats:
        """A snapshot of the counters: the cache's totals, and the same counters per
        namespace in ``namespaces`` (see :mod:`scalekit.cache._metrics`)."""
        parts = {c.namespace: self._stats_of(c) for c in self._metrics.sets()}
        total: dict[str, Any] = {f: sum(getattr(p, f) for p in parts.values()) for f in _SUMMED}
        return CacheStats(name=self.name, **total, namespaces=parts)

    def _stats_of(self, m: CacheCounters) -> CacheStats:
        direct = m is self._m  # the cache-wide figures are counted there
        return CacheStats(
            name=self.name,
            hits=int(m.hits.value),
            misses=int(m.misses.value),
            stale_served=int(m.stale.value),
            loads=int(m.loads.value),
            load_errors=int(m.load_errors.value),
            load_time_total=float(m.load_seconds.value),
            evictions=self.backend.evictions if direct else 0,
            decode_errors=int(getattr(self.backend, "decode_errors", 0)) if direct else 0,
            backend_errors=int(m.backend_errors.value) if direct else 0,
            coalesced=int(m.coalesced.value),
            invalidations=int(m.invalidations.value),
            invalidations_deferred=int(m.deferred.value),
        )

    # --- the engine's backend steps and the two drivers ------------------------------
    #
    # A flow is a generator: it yields steps, ``("load", None)`` (run the loader),
    # ``("sleep", seconds)`` or ``(method, args)`` (call the backend's ``method``,
    # or its ``a``-prefixed twin in async code), receives ``(result, exception)``
    # (None for a sleep), and returns the outcome. Everything else (freshness,
    # fences, counting, the guard) is decided in the flow, without I/O; the drivers
    # only run the steps (tenacity's ``iter()``, httpx's ``auth_flow``;
    # ``sampling/pipeline.py``'s ``_walk`` in this library).

    def _run(self, flow: _Flow[R], loader: Callable[[], object] | None = None) -> R:
        """The sync driver: blocking backend calls, ``time.sleep``, ``loader()``."""
        backend = self.backend
        reply: Any = None
        try:
            while True:
                op, arg = flow.send(reply)
                if op == "load":
                    try:
                        reply = cast("Callable[[], object]", loader)(), None
                    except Exception as exc:
                        reply = None, exc
                elif op == "sleep":
                    time.sleep(arg)
                    reply = None
                else:
                    try:
                        reply = getattr(backend, op)(*arg), None
                    except Exception as exc:
                        reply = None, exc
        except StopIteration as stop:
            return cast(R, stop.value)
        finally:
            flow.close()

    async def _arun(
        self, flow: _Flow[R], loader: Callable[[], Awaitable[object]] | None = None
    ) -> R:
        """The async driver: awaited backend twins, ``asyncio.sleep``, ``await loader()``."""
        backend = self.backend
        reply: Any = None
        try:
            while True:
                op, arg = flow.send(reply)
                if op == "load":
                    try:
                        reply = await cast("Callable[[], Awaitable[object]]", loader)(), None
                    except Exception as exc:
                        reply = None, exc
                elif op == "sleep":
                    await asyncio.sleep(arg)
                    reply = None
                else:
                    try:
                        reply = await getattr(backend, "a" + op)(*arg), None
                    except Exception as exc:
                        reply = None, exc
        except StopIteration as stop:
            return cast(R, stop.value)
        finally:
            flow.close()

    def _call(self, op: str, *args: Any) -> _Flow[Any]:
        """A backend call that degrades (reads and fills): ``_DOWN`` if the backend is
        cooling down, fails (counted by the guard) or answers a data error about this
        key (the backend is healthy: load without storing); else its answer.
        Writes and invalidations use :meth:`_write_call`, which raises."""
        guard = self._guard
        if guard.skip():
            return _DOWN
        result, exc = yield op, args
        if exc is None:
            guard.success()
            return result
        if isinstance(exc, BackendError):
            guard.failure(exc)
            return _DOWN
        if isinstance(exc, BackendDataError):
            guard.success()
            return _DOWN
        raise exc

    def _write_call(self, op: str, *args: Any) -> _Flow[Any]:
        """A write or an invalidation: a backend failure is counted and raised."""
        result, exc = yield op, args
        if exc is None:
            self._guard.success()
            return result
        if isinstance(exc, BackendError):
            self._guard.failure(exc)
        raise exc

    def _read(self, key: str, hint: Any) -> _Flow[Entry | None]:
        """A read that degrades: a failing or cooling-down backend is a miss."""
        entry = yield from self._call("get", key, hint)
        return None if entry is _DOWN else cast("Entry | None", entry)

    def _peek(self, key: str, hint: Any = None) -> Entry | None:
        """The stored entry, not counted (refresh scheduling)."""
        return self._run(self._read(key, hint))

    async def _apeek(self, key: str, hint: Any = None) -> Entry | None:
        return await self._arun(self._read(key, hint))

    # --- loading -------------------------------------------------------------------

    def get_or_load(
        self,
        key: str,
        loader: Callable[[], T],
        *,
        tags: Iterable[str] = (),
        options: CacheOptions | None = None,
        type_hint: Any = None,
    ) -> T:
        """The cached value of ``key``, loading it with ``loader`` (single-flight) when
        needed; see the module docstring for freshness, errors and waiting.
        ``type_hint``: the type a remote backend decodes the value to."""
        key = _key(key)
        opts = options or self.options
        tagset = _check_tags(tags)
        entry, state = self._run(self._lookup_flow(key, opts, type_hint))
        return self._serve_or_load(key, loader, tagset, opts, entry, state, (), type_hint)

    async def aget_or_load(
        self,
        key: str,
        loader: Callable[[], Awaitable[T]],
        *,
        tags: Iterable[str] = (),
        options: CacheOptions | None = None,
        type_hint: Any = None,
    ) -> T:
        """The async :meth:`get_or_load`: ``loader`` returns an awaitable, which runs
        as a task shared by every caller of ``key`` on this event loop."""
        key = _key(key)
        opts = options or self.options
        tagset = _check_tags(tags)
        entry, state = await self._arun(self._lookup_flow(key, opts, type_hint))
        return await self._aserve_or_load(key, loader, tagset, opts, entry, state, (), type_hint)

    # single-flight: threads wait on an Event, tasks share one task per loop; both
    # run the one fill flow (_fill_flow) with their driver

    def _serve_or_load(
        self,
        key: str,
        loader: Callable[[], T],
        tagset: frozenset[str],
        opts: CacheOptions,
        entry: Entry | None,
        state: Freshness | None,
        heads: tuple[str, ...] = (),
        hint: Any = None,
        m: CacheCounters | None = None,
    ) -> T:
        """:meth:`get_or_load` after its read (``entry``, ``state`` from :meth:`_lookup`);
        ``m``: the counters of the caller's namespace (default: direct calls')."""
        if m is None:
            m = self._m
        if entry is not None and state is not None and state.servable:
            self._count_served(state, m)
            if state.needs_refresh:
                self._spawn_thread(key, loader, tagset, opts, heads, hint, m)
            return cast(T, _unwrap(entry[0]))
        m.misses.inc()
        waited = False
        while True:
            with self._lock:
                flight = self._sync_flights.get(key)
                leader = flight is None
                if flight is None:
                    flight = self._sync_flights[key] = _SyncFlight()
                    fill = self._new_fill(key, tagset, heads, hint, m)
            if leader:
                outcome = self._lead_sync(flight, key, fill, loader, opts, background=False)
                return cast(T, self._resolve(outcome, entry, m))
            if not waited:
                waited = True
                m.coalesced.inc()
            if not flight.done.wait(opts._wait):
                with self._lock:
                    fill = self._new_fill(key, tagset, heads, hint, m)
                flow = self._fill_flow(fill, opts, background=False, lease=False)
                return cast(T, self._resolve(self._run(flow, loader), entry, m))
            if flight.abandoned or flight.outcome is None:
                continue
            return cast(T, self._resolve(flight.outcome, entry, m))

    def _lead_sync(
        self,
        flight: _SyncFlight,
        key: str,
        fill: _Fill,
        loader: Callable[[], object],
        opts: CacheOptions,
        *,
        background: bool,
    ) -> _Outcome:
        try:
            outcome = self._run(self._fill_flow(fill, opts, background=background), loader)
        except BaseException:
            flight.abandoned = True
            raise
        else:
            flight.outcome = outcome
            return outcome
        finally:
            with self._lock:
                if self._sync_flights.get(key) is flight:
                    del self._sync_flights[key]
            flight.done.set()

    def _spawn_thread(
        self,
        key: str,
        loader: Callable[[], object],
        tags: frozenset[str],
        opts: CacheOptions,
        heads: tuple[str, ...] = (),
        hint: Any = None,
        m: CacheCounters | None = None,
    ) -> None:
        with self._lock:
            if key in self._sync_flights:
                return  # a load of this key is already running: that is the refresh
            flight = self._sync_flights[key] = _SyncFlight()
            fill = self._new_fill(key, tags, heads, hint, m)

        def refresh() -> None:
            try:
                self._lead_sync(flight, key, fill, loader, opts, background=True)
            finally:
                with self._lock:
                    self._threads.discard(thread)

        thread = threading.Thread(
            target=refresh, name=f"scalekit-cache-refresh[{self.name}]", daemon=True
        )
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def drain(self, timeout: float | None = None) -> bool:
        """Wait for the background refresh threads started so far; True if all ended."""
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join(timeout)
        return not any(t.is_alive() for t in threads)

    async def _aserve_or_load(
        self,
        key: str,
        loader: Callable[[], Awaitable[T]],
        tagset: frozenset[str],
        opts: CacheOptions,
        entry: Entry | None,
        state: Freshness | None,
        heads: tuple[str, ...] = (),
        hint: Any = None,
        m: CacheCounters | None = None,
    ) -> T:
        """:meth:`aget_or_load` after its read (``entry``, ``state`` from :meth:`_areader`);
        ``m``: the counters of the caller's namespace (default: direct calls')."""
        if m is None:
            m = self._m
        if entry is not None and state is not None and state.servable:
            self._count_served(state, m)
            if state.needs_refresh:
                self._async_flight(key, loader, tagset, opts, heads, hint, m, background=True)
            return cast(T, _unwrap(entry[0]))
        m.misses.inc()
        task, leader = self._async_flight(
            key, loader, tagset, opts, heads, hint, m, background=False
        )
        if leader:
            outcome = await asyncio.shield(task)
        else:
            m.coalesced.inc()
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow
                # this caller's cancellation when the load ends at the same moment
                async with asyncio.timeout(opts._wait):
                    outcome = await asyncio.shield(task)
            except TimeoutError:
                with self._lock:
                    fill = self._new_fill(key, tagset, heads, hint, m)
                flow = self._fill_flow(fill, opts, background=False, lease=False)
                outcome = await self._arun(flow, loader)
        return cast(T, self._resolve(outcome, entry, m))

    def _async_flight(
        self,
        key: str,
        loader: Callable[[], Awaitable[object]],
        tags: frozenset[str],
        opts: CacheOptions,
        heads: tuple[str, ...],
        hint: Any,
        m: CacheCounters,
        *,
        background: bool,
    ) -> tuple[asyncio.Task[_Outcome], bool]:
        loop = asyncio.get_running_loop()
        fkey = (loop, key)
        with self._lock:
            task = self._async_flights.get(fkey)
            if task is not None:
                return task, False
            fill = self._new_fill(key, tags, heads, hint, m)
            flow = self._fill_flow(fill, opts, background=background)
            task = loop.create_task(self._arun(flow, loader))
            self._async_flights[fkey] = task
            self._tasks.add(task)

        def done(t: asyncio.Task[_Outcome]) -> None:
            with self._lock:
                if self._async_flights.get(fkey) is t:
                    del self._async_flights[fkey]
                self._tasks.discard(t)
            if not t.cancelled():
                t.exception()  # retrieved: no "never retrieved" warning

        task.add_done_callback(done)
        return task, True

    async def adrain(self) -> None:
        """Wait for the background refresh tasks of the running loop started so far."""
        loop = asyncio.get_running_loop()
        with self._lock:
            tasks = [t for t in self._tasks if t.get_loop() is loop]
        if tasks:
            await asyncio.wait(tasks)

    # --- the fill flow ------------------------------------------------------------------

    def _fill_flow(
        self, fill: _Fill, opts: CacheOptions, *, background: bool, lease: bool = True
    ) -> _Flow[_Outcome]:
        """One load of ``fill.key``: begin (the fresh value another caller stored, or
        this caller's lease), load, commit (fenced) or release; returns the outcome.
        An in-process backend needs no lease: a foreground load reads once more
        instead, and the value is stored under the cache lock."""
        started = self._clock.now()
        ticket: FillTicket | None = None
        try:
            if self._local:
                if not background and (ready := self._recheck(fill.key)) is not None:
                    return ready
            else:
                ticket, ready = yield from self._begin(fill, opts, lease=lease)
                if ready is not None:
                    return ready
                started = self._clock.now()
            value, exc = yield "load", None
            if exc is None:
                outcome, store = self._loaded(fill, value, opts, started)
            else:
                outcome, store = self._failed(fill, exc, opts, started, background=background)
            yield from self._finish(fill, ticket, store, opts)
            return outcome
        finally:
            with self._lock:
                self._fills.discard(fill)

    # --- refresh ahead -----------------------------------------------------------------

    def refresh(
        self,
        key: str,
        loader: Callable[[], object],
        *,
        tags: Iterable[str] = (),
        options: CacheOptions | None = None,
        type_hint: Any = None,
        margin: float | None = None,
    ) -> bool:
        """Load ``key`` now and store it, for values computed ahead of readers.

        With ``margin`` (seconds), nothing happens while the stored value stays fresh
        for more than ``margin`` seconds; on a remote backend nothing happens either
        while another process holds the key's lease, so a fleet refreshes once.
        Returns True if ``loader`` ran. Its exception propagates (nothing is stored).
        A remote backend that is down or cooling down: False (nothing ran).
        See :class:`~scalekit.cache.refresh.RefreshAhead` for the scheduled job.
        """
        return self._run(self._refresh_flow(key, tags, options, type_hint, margin), loader)

    async def arefresh(
        self,
        key: str,
        loader: Callable[[], Awaitable[object]],
        *,
        tags: Iterable[str] = (),
        options: CacheOptions | None = None,
        type_hint: Any = None,
        margin: float | None = None,
    ) -> bool:
        """:meth:`refresh` for async code (``loader`` returns an awaitable)."""
        flow = self._refresh_flow(key, tags, options, type_hint, margin)
        return await self._arun(flow, loader)

    def _refresh_flow(
        self,
        key: str,
        tags: Iterable[str],
        options: CacheOptions | None,
        hint: Any,
        margin: float | None,
    ) -> _Flow[bool]:
        key = _key(key)
        opts = options or self.options
        tagset = _check_tags(tags)
        gap = _margin(margin)
        with self._lock:
            fill = self._new_fill(key, tagset, (), hint)
        ticket: FillTicket | None = None
        try:
            if self._local:
                if gap != math.inf and self._fresh_for(self.backend.get(key), gap):
                    return False
            else:
                begun = yield from self._call(
                    "begin_fill", key, tagset, (), self._clock.now(), hint, min(gap, _FAR)
                )
                ticket = _acquired(begun)
                if ticket is None:
                    return False
            started = self._clock.now()
            value, exc = yield "load", None
            if exc is not None:
                _, store = self._failed(fill, exc, opts, started, background=True)
                yield from self._finish(fill, ticket, store, opts)  # a negative entry, if asked
                raise exc
            _, store = self._loaded(fill, value, opts, started)
            yield from self._finish(fill, ticket, store, opts)
            return True
        finally:
            with self._lock:
                self._fills.discard(fill)

    def _fresh_for(self, entry: tuple[object, EntryMeta] | None, gap: float) -> bool:
        """Whether ``entry`` stays fresh for more than ``gap`` seconds from now."""
        if entry is None:
            return False
        meta = entry[1]
        return self._clock.now() + gap < meta.stored_at + meta.ttl

    # --- reads ---------------------------------------------------------------------

    def _lookup_flow(
        self, key: str, opts: CacheOptions, hint: Any = None
    ) -> _Flow[tuple[Entry | None, Freshness | None]]:
        """Read ``key`` and classify it (nothing counted: the caller counts a
        servable state with :meth:`_count_served`, or a hit with ``_hit_count``).
        A random number for XFetch is drawn only when early refresh is enabled."""
        entry = yield from self._read(key, hint)
        if entry is None:
            return _MISSING
        return _classified(entry, opts, self._clock.now(), self._draw)

    def _lookup(
        self, key: str, opts: CacheOptions, hint: Any = None
    ) -> tuple[Entry | None, Freshness | None]:
        """:meth:`_lookup_flow`, run by the sync driver."""
        return self._run(self._lookup_flow(key, opts, hint))

    def _reader(
        self, opts: CacheOptions, hint: Any = None
    ) -> Callable[[str], tuple[Entry | None, Freshness | None]]:
        """The ``@cached`` hit path's read: :meth:`_lookup` for one set of options,
        as a closure over prebound locals, with no flow and no driver (an in-process
        backend's read costs no method lookups; a remote one is one guarded call)."""
        now = self._clock.now
        beta = opts.beta
        draw = self._draw
        if self._local:
            get = self.backend.get

            def read(key: str) -> tuple[Entry | None, Freshness | None]:
                entry = get(key)
                if entry is None:
                    return _MISSING
                return entry, classify_unchecked(entry[1], now(), beta, draw)

            return read

        call, rget = self._guard.call, self.backend.get

        def read_remote(key: str) -> tuple[Entry | None, Freshness | None]:
            try:
                entry = call(lambda: rget(key, hint), _no_entry)
            except BackendDataError:  # about this key only: a miss
                return _MISSING
            return _MISSING if entry is None else _classified(entry, opts, now(), draw)

        return read_remote

    def _areader(
        self, opts: CacheOptions, hint: Any = None
    ) -> Callable[[str], Awaitable[tuple[Entry | None, Freshness | None]]]:
        """:meth:`_reader` for async code: the backend's read awaited."""
        now, draw = self._clock.now, self._draw
        acall, aget = self._guard.acall, cast(AsyncCacheBackend, self.backend).aget

        async def aread(key: str) -> tuple[Entry | None, Freshness | None]:
            try:
                entry = await acall(lambda: aget(key, hint), _no_entry)
            except BackendDataError:
                return _MISSING
            return _MISSING if entry is None else _classified(entry, opts, now(), draw)

        return aread

    def _draw(self) -> float:
        """XFetch's ``rand``, uniform in ``(0, 1]``."""
        return 1.0 - self._rng.random()

    def _count_served(self, state: Freshness, m: CacheCounters | None = None) -> None:
        if m is None:
            m = self._m
        if state is Freshness.STALE_REVALIDATE:
            m.stale.inc()
        else:
            next(m.hits.tick)

    def _recheck(self, key: str) -> _Outcome | None:
        """Before a foreground load: the outcome if a fresh entry appeared since the
        caller's read (a flight ended between that read and joining it)."""
        entry = self.backend.get(key)
        if entry is None:
            return None
        return self._fresh_outcome(entry)

    def _fresh_outcome(self, entry: tuple[object, EntryMeta]) -> _Outcome | None:
        # beta 0: no early refresh, as classify() with its default rand=1.0
        if classify_unchecked(entry[1], self._clock.now(), 0.0, _no_draw) is not Freshness.FRESH:
            return None
        value = entry[0]
        if isinstance(value, CachedError):
            outcome = _Outcome(error=value.error)
            outcome.tb = value.tb
            return outcome
        return _Outcome(value)

    # --- fills on a remote backend ---------------------------------------------------

    def _ticket_outcome(
        self, ticket: FillTicket, opts: CacheOptions
    ) -> tuple[FillTicket | None, _Outcome | None]:
        """What a ``fresh`` ticket means: its value (or, if it cannot be used, a
        load that will not store)."""
        entry = ticket.entry
        if entry is not None and type(entry[0]) is RemoteError:
            entry = _materialize(entry, opts)
        ready = None if entry is None else self._fresh_outcome(entry)
        return None, ready

    def _begin_step(
        self,
        ticket: Any,
        opts: CacheOptions,
        *,
        lease: bool,
        deadline: float | None,
        forced: bool,
    ) -> tuple[FillTicket | None, _Outcome | None] | float | None:
        """What one ``begin_fill`` answer means, for the sync and async loops: the
        final ``(ticket, ready)`` pair, or how long at most to wait before asking
        again (another process holds the lease and ``lock_timeout`` has not passed),
        or None: the "fresh" entry cannot be used by this reader (a cached exception
        of a class it does not list): ask again at once, past any fresh value, to
        load and overwrite it. ``(None, None)``: the backend is down; load without
        storing."""
        if ticket is _DOWN:
            return None, None
        if ticket.state == "fresh":
            done = self._ticket_outcome(ticket, opts)
            return None if done[1] is None and not forced else done
        if ticket.state == "acquired" or not lease:
            return ticket, None
        left = math.inf if deadline is None else deadline - time.monotonic()
        return (ticket, None) if left <= 0 else left

    def _begin(
        self, fill: _Fill, opts: CacheOptions, *, lease: bool
    ) -> _Flow[tuple[FillTicket | None, _Outcome | None]]:
        """Before a load on a remote backend: the fresh value if another process
        stored it, else a ticket (this caller's lease, or none after waiting
        ``lock_timeout`` for another process' load); see :meth:`_begin_step`."""
        deadline = None if opts._wait is None else time.monotonic() + opts._wait
        delay = _POLL_FIRST
        margin = 0.0
        while True:
            ticket = yield from self._call(
                "begin_fill",
                fill.key,
                fill.tags,
                fill.heads,
                self._clock.now(),
                fill.hint,
                margin,
            )
            step = self._begin_step(
                ticket, opts, lease=lease, deadline=deadline, forced=margin != 0.0
            )
            if step is None:
                margin = _FAR
                continue
            if not isinstance(step, float):
                return step
            yield "sleep", min(delay, step)
            delay = min(delay * 2, _POLL_MAX)

    def _commit_plan(
        self,
        fill: _Fill,
        store: object,
        opts: CacheOptions,
        current: tuple[object, EntryMeta] | None,
    ) -> tuple[object, EntryMeta, float] | None:
        """(value, meta, storage ttl) to commit for a finished load, or None. A
        negative entry never replaces a value that ``current`` (read after the
        failure) still allows serving stale."""
        if store is _NOTHING:
            return None
        if (
            isinstance(store, CachedError)
            and current is not None
            and plan_after_load_failure(current[1], self._clock.now())
        ):
            return None
        negative = store is None or isinstance(store, CachedError)
        with self._lock:
            if fill.generation != 0:
                return None
            meta = self._meta(opts, delta=fill.delta, negative=negative)
        return store, meta, remaining_ttl(meta, meta.stored_at)

    def _finish(
        self, fill: _Fill, ticket: FillTicket | None, store: object, opts: CacheOptions
    ) -> _Flow[None]:
        """After a load on a remote backend: commit (fenced) or release the lease."""
        if ticket is None:
            return
        current = None
        if isinstance(store, CachedError):
            current = yield from self._read(fill.key, fill.hint)
        plan = self._commit_plan(fill, store, opts, current)
        if plan is None:
            _, exc = yield "release", (ticket,)
        else:
            _, exc = yield "commit_fill", (ticket, *plan)
        if exc is None or isinstance(exc, BackendDataError):
            return  # a data error is about this key: not stored, the next read loads
        if isinstance(exc, BackendError):
            self._guard.failure(exc)
        elif isinstance(exc, SerializationError):
            self._store_failed(fill, exc)
            yield from self._call("release", ticket)
        else:
            raise exc

    def _store_failed(self, fill: _Fill, exc: SerializationError) -> None:
        fill.m.load_errors.inc()
        with self._lock:
            first = not self._warned
            self._warned = True
        (log.warning if first else log.debug)(
            "cache %r: the value of %r cannot be stored (%s); it is served but not cached",
            self.name,
            fill.key,
            exc,
        )

    # --- bookkeeping ------------------------------------------------------------------

    def _new_fill(
        self,
        key: str,
        tags: frozenset[str],
        heads: tuple[str, ...] = (),
        hint: Any = None,
        m: CacheCounters | None = None,
    ) -> _Fill:
        """Register a load in progress (call with the lock held); ``m``: the counters
        of the caller's namespace (default: direct calls')."""
        self._fill_seq += 1
        fill = _Fill(key, tags, self._fill_seq, heads, hint, self._m if m is None else m)
        self._fills.add(fill)
        return fill

    def _invalidate_fills(self, match: Callable[[_Fill], bool]) -> None:
        """Void matching loads in progress (call with the lock held)."""
        for fill in self._fills:
            if match(fill):
                fill.generation += 1

    def _meta(self, opts: CacheOptions, *, delta: float, negative: bool) -> EntryMeta:
        """The metadata of an entry written now (call with the lock held)."""
        now = self._clock.now()
        self._writes += 1
        if negative:
            return EntryMeta(stored_at=now, ttl=opts._neg, generation=self._writes)
        return EntryMeta(
            stored_at=now,
            ttl=opts._ttl,
            stale_while_revalidate=opts._swr,
            stale_if_error=opts._sie,
            delta=delta,
            generation=self._writes,
        )

    def _write(
        self,
        key: str,
        value: object,
        tags: frozenset[str],
        opts: CacheOptions,
        *,
        delta: float,
        negative: bool,
    ) -> None:
        """Store an entry in a local backend (call with the lock held)."""
        meta = self._meta(opts, delta=delta, negative=negative)
        self.backend.set(key, value, meta, remaining_ttl(meta, meta.stored_at), tags)

    def _loaded(
        self, fill: _Fill, value: object, opts: CacheOptions, started: float
    ) -> tuple[_Outcome, object]:
        """Count a load; on a local backend store it. Returns the outcome and what a
        remote backend must store (``_NOTHING``: nothing)."""
        elapsed = max(0.0, self._clock.now() - started)
        store: object = _NOTHING
        m = fill.m
        m.loads.inc()
        if elapsed:
            m.load_seconds.add(elapsed)
        storable = self._local or fill.hint is not None or self._untyped_ok(fill, value)
        with self._lock:
            if storable and fill.generation == 0 and (value is not None or opts.cache_none):
                if self._local:
                    self._write(
                        fill.key, value, fill.tags, opts, delta=elapsed, negative=value is None
                    )
                else:
                    store = value
                    fill.delta = elapsed
                self._invalidate_fills(lambda f: f.key == fill.key and f.seq < fill.seq)
        return _Outcome(value), store

    def _untyped_ok(self, fill: _Fill, value: object) -> bool:
        """A value loaded without a type (no annotation, no ``type_hint=``) is stored
        on a remote backend only if it reads back as itself; else it is served but
        not stored (logged once), never a ``dict`` on the next hit."""
        serializer = getattr(getattr(self.backend, "l2", self.backend), "serializer", None)
        plain = _MSGPACK_PLAIN if isinstance(serializer, MsgpackSerializer) else _JSON_PLAIN
        if not isinstance(serializer, JsonSerializer | MsgpackSerializer) or _is_plain(
            value, plain
        ):
            return True
        self._store_failed(
            fill,
            SerializationError(
                f"a {type(value).__name__} stored without a type would read back as plain "
                f"data; annotate the function's return type or pass type_hint="
            ),
        )
        return False

    def _failed(
        self,
        fill: _Fill,
        exc: Exception,
        opts: CacheOptions,
        started: float,
        *,
        background: bool,
    ) -> tuple[_Outcome, object]:
        elapsed = max(0.0, self._clock.now() - started)
        store: object = _NOTHING
        negative = (
            bool(opts.cache_exceptions)
            and isinstance(exc, opts.cache_exceptions)
            and fill.generation == 0
        )
        if negative and not self._local:
            # stored by _finish / _afinish, which first check (with a read of the
            # right kind: awaited in async code) that no value that may still be
            # served stale would be replaced
            store = CachedError(exc)
            negative = False
        m = fill.m
        m.loads.inc()
        m.load_errors.inc()
        if elapsed:
            m.load_seconds.add(elapsed)
        with self._lock:
            if negative:
                current = self.backend.get(fill.key)
                if current is None or not plan_after_load_failure(current[1], self._clock.now()):
                    self._write(
                        fill.key, CachedError(exc), fill.tags, opts, delta=0.0, negative=True
                    )
        if background:
            log.debug("cache %r: background refresh of %r failed: %r", self.name, fill.key, exc)
        return _Outcome(error=exc), store

    def _resolve(
        self, outcome: _Outcome, stale: tuple[object, EntryMeta] | None, m: CacheCounters
    ) -> object:
        """The caller's answer: the loaded value, else the stale one if allowed
        (counted on ``m``, the caller's namespace)."""
        error = outcome.error
        if error is None:
            return outcome.value
        if (
            stale is not None
            and not isinstance(stale[0], CachedError)
            and plan_after_load_failure(stale[1], self._clock.now())
        ):
            m.stale.inc()
            return stale[0]
        raise error.with_traceback(outcome.tb)


#: a read that found nothing (one shared tuple, not a new one per miss)
_MISSING: tuple[None, None] = (None, None)

#: a remote backend that failed or is cooling down (see Cache._degrade)
_DOWN = object()


def _acquired(ticket: Any) -> FillTicket | None:
    """A refresh's ticket if this caller holds the lease, else None (down, fresh
    enough, or another process is loading)."""
    if ticket is _DOWN or ticket.state != "acquired":
        return None
    return cast(FillTicket, ticket)


#: "nothing to store" (a load that must not be cached, or was voided)
_NOTHING = object()
_JSON_PLAIN = (str, int, float, bool, type(None))
_MSGPACK_PLAIN = (*_JSON_PLAIN, bytes)


def _is_plain(value: object, plain: tuple[type, ...]) -> bool:
    """True if ``value`` is made of ``plain`` scalars, lists and str-keyed dicts
    only (what a JSON or msgpack round trip gives back as it was)."""
    stack = [value]
    while stack:
        v = stack.pop()
        t = type(v)
        if t in plain:
            continue
        if t is list:
            stack.extend(cast("list[object]", v))
        elif t is dict:
            d = cast("dict[object, object]", v)
            if any(type(k) is not str for k in d):
                return False
            stack.extend(d.values())
        else:
            return False
    return True


#: polling a lease another process holds: first and longest pause (seconds)
_POLL_FIRST = 0.001
_POLL_MAX = 0.05


#: a margin no stored value outlives (a refresh without ``margin`` always loads)
_FAR = 1e12


def _margin(margin: float | None) -> float:
    if margin is None:
        return math.inf
    if isinstance(margin, bool) or not isinstance(margin, int | float) or not margin >= 0:
        raise ConfigurationError(f"margin must be a number of seconds >= 0 or None, got {margin!r}")
    return float(margin)


def _materialize(
    entry: tuple[object, EntryMeta], opts: CacheOptions
) -> tuple[object, EntryMeta] | None:
    """A negative entry read from a remote backend, as an exception of one of
    ``opts.cache_exceptions`` (matched by module and qualified name; nothing is
    imported), or None (a miss) if none matches or it cannot be rebuilt."""
    remote = cast(RemoteError, entry[0])
    for cls in opts.cache_exceptions:
        if cls.__module__ == remote.module and cls.__qualname__ == remote.qualname:
            try:
                return CachedError(cls(*remote.args)), entry[1]
            except Exception:
                return None
    return None


def _classified(
    entry: Entry, opts: CacheOptions, now: float, draw: Callable[[], float]
) -> tuple[Entry | None, Freshness | None]:
    """A read entry and its state (a remote negative entry rebuilt as one of
    ``opts.cache_exceptions``, or a miss if none matches)."""
    if type(entry[0]) is RemoteError:
        rebuilt = _materialize(entry, opts)
        if rebuilt is None:
            return _MISSING
        entry = rebuilt
    return entry, classify_unchecked(entry[1], now, opts.beta, draw)


def _no_entry(exc: BackendError | None) -> None:
    """A read on a failing or cooling-down backend: a miss."""
    return None


class _CacheGuard(BackendGuard):
    """The backend guard, each failure also counted on the cache's counter; reads
    skip the backend while invalidations are deferred (nothing they cover is served)."""

    __slots__ = ("counter", "deferred")

    counter: Counter
    deferred: list[tuple[str, tuple[Any, ...]]]

    def skip(self) -> bool:
        return bool(self.deferred) or BackendGuard.skip(self)

    def success(self) -> None:
        if not self.deferred:  # recovered once the deferred invalidations are applied
            BackendGuard.success(self)

    def failure(self, exc: BaseException) -> None:
        self.counter.inc()
        super().failure(exc)


def _no_draw() -> float:  # pragma: no cover - never called with beta 0
    return 1.0


def _every(fill: _Fill) -> bool:
    return True


def _unwrap(value: object) -> object:
    if isinstance(value, CachedError):
        value.reraise()
    return value


_key = _validate.key


def _check_tags(tags: Iterable[str]) -> frozenset[str]:
    if isinstance(tags, str):
        raise ConfigurationError(f"tags must be a collection of str, e.g. ({tags!r},)")
    tagset = frozenset(tags)
    for tag in tagset:
        if not isinstance(tag, str) or not tag:
            raise ConfigurationError(f"every tag must be a non-empty str, got {tag!r}")
    return tagset


_default: Cache | None = None
_default_lock = threading.Lock()


def default_cache() -> Cache:
    """The process-wide bounded in-memory cache used by ``@cached`` without
    ``cache=`` (``memory://``, 10,000 entries, monotonic clock, name ``"default"``)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Cache("memory://", name="default")
    return _default

"""The cache: :class:`Cache`, shared by ``@cached`` and direct use.

All freshness maths is :mod:`scalekit.cache._freshness` (pure); the steps of every
operation are flows of the fill engine (:mod:`scalekit.cache._engine`: a
generator of steps run by a sync and an async driver); this module decides, in
those flows, what a read means, when to load, what to store, and keeps the
single-flight of one process. Every backend (memory, Redis, tiered) implements the
same protocol (:class:`~scalekit.cache._backend.FencedCacheBackend`: reads, writes,
invalidations and the fenced fill), so one engine serves them all.

Reads (``get_or_load`` / ``aget_or_load``) classify the entry with
``rand = 1.0 - rng.random()``: ``FRESH`` is served (a *hit*); ``FRESH_EARLY_REFRESH``
(XFetch chose this read) is served and starts one background refresh;
``STALE_REVALIDATE`` serves the stale value (*stale_served*) and starts one
background refresh; anything else is a *miss*, loaded in the foreground (and if
that load fails while :func:`~scalekit.cache._freshness.plan_after_load_failure`
allows it, the stale value is served instead). The recompute time of every load is
stored as ``EntryMeta.delta``, which scales XFetch.

A background refresh reloads unless the entry was replaced since the read that
started it (by another refresh, in this process or another): it asks the backend
for a value fresh beyond the one it saw, else takes the key's lease, so the fleet
refreshes each entry once. Single-flight, lock timeouts, fences and negative
caching: see ``docs/explanation/cache.md``.

The internal API that ``@cached`` and :class:`~scalekit.cache._refresh.RefreshAhead`
use is the block of underscore members marked as such below; nothing outside this
module reaches further into a :class:`Cache`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Literal, TypeVar, cast

from scalekit import _validate
from scalekit._clock import Clock
from scalekit.cache._backend import CachedError, Entry, FencedCacheBackend, FillTicket, RemoteError
from scalekit.cache._engine import (
    DOWN,
    FAR,
    MISSING,
    NOTHING,
    POLL_FIRST,
    POLL_MAX,
    Fill,
    Fills,
    Flow,
    Outcome,
    arun,
    classified,
    fresh_outcome,
    fresh_until,
    is_plain,
    materialize,
    no_entry,
    run,
    unwrap,
)
from scalekit.cache._flights import SingleFlight
from scalekit.cache._freshness import (
    EntryMeta,
    Freshness,
    classify,
    classify_unchecked,
    plan_after_load_failure,
    remaining_ttl,
)
from scalekit.cache._guard import CacheGuard, DeferredInvalidations, degrading, raising
from scalekit.cache._keys import head as _key_head
from scalekit.cache._metrics import CacheCounters, CacheMetrics
from scalekit.cache._open import backend_from, plain_types, share_decode_counter
from scalekit.cache._options import (
    SUMMED,
    CacheOptions,
    CacheStats,
    check_key,
    check_margin,
    check_tags,
)
from scalekit.errors import BackendDataError, BackendError, ConfigurationError, SerializationError
from scalekit.ratelimit._startup import aping, ping
from scalekit.serde import Serializer

__all__ = ["Cache", "CacheOptions", "CacheStats", "default_cache"]

log = logging.getLogger("scalekit.cache")

T = TypeVar("T")
R = TypeVar("R")


class Cache:
    """A TTL cache with single-flight loads, stale windows, early refresh and tags.

    :param backend: ``None`` (the default): ``SCALEKIT_REDIS_URL`` when it is set (see
        :mod:`scalekit.config`), else ``"memory://"``. Or ``"memory://"`` (optionally
        ``"memory://?max_entries=N"``), a
        Redis URL (``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://``: a
        :class:`~scalekit.cache.RedisCacheBackend`) or a backend object
        (:class:`~scalekit.cache._backend.FencedCacheBackend`); ``"tiered+redis://..."``
        puts a :class:`~scalekit.cache.TieredCacheBackend` (memory L1) in front.
    :param name: names the cache in :meth:`stats` and logs.
    :param clock: time source (monotonic by default) of a backend built from a URL.
        The cache reads the time of its backend (a Redis one brings the clock its
        fleet agrees on); a backend object with another clock than ``clock=`` is
        refused.
    :param rng: random source for XFetch (``random.Random`` by default).
    :param max_entries: the bound of a ``memory://`` backend (default 10,000).
    :param prefix: the key prefix used by ``@cached`` (see
        :class:`~scalekit.cache.KeyBuilder`).
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
        backend: str | FencedCacheBackend | None = None,
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
        cooldown = float(_validate.duration(backend_cooldown, "backend_cooldown"))
        if on_invalidation_error not in ("raise", "defer"):
            raise ConfigurationError(
                f"on_invalidation_error must be 'raise' or 'defer', got {on_invalidation_error!r}"
            )
        self._defer = on_invalidation_error == "defer"
        self._rng = rng or random.Random()
        if backend is None:  # a cache in each process's memory is a fine default
            from scalekit.config import default_backend_url

            backend = default_backend_url(fallback="memory://")
        self.backend = backend_from(backend, clock, max_entries, serializer)
        self._clock: Clock = self.backend.clock
        #: internal API: one counter set per namespace (``_metrics.of(namespace)``,
        #: resolved by ``@cached`` at decoration); ``_m``: direct calls' and the
        #: cache-wide ones (see :mod:`scalekit.cache._metrics`)
        self._metrics = CacheMetrics(self, name, prefix)
        self._m = m = self._metrics.direct
        self._guard = CacheGuard(name, cooldown, self._clock.now, kind="cache", logger=log)
        self._guard.counter = m.backend_errors
        self._deferred = DeferredInvalidations(
            name,
            self.backend,
            self._guard,
            bound=_validate.count(max_deferred, "max_deferred"),
            counters=self._metrics.covering,
            pause=min(0.05, cooldown or 0.05),
            longest=cooldown,
        )
        share_decode_counter(self.backend, m.decode_errors)
        #: values stored without a type must read back as themselves (JSON / msgpack)
        self._plain = plain_types(self.backend)
        self._fills = Fills(self._clock)
        self._flights = SingleFlight(name, self.backend)
        self._warned = False  # a value that cannot be serialized is logged once at WARNING
        #: internal API: True if the backend keeps Python objects in this process
        #: (no I/O): its reads need no guard and no await, its values no type
        self._in_process = bool(self.backend.local)

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
        return self._run(self._get_flow(check_key(key), default, type_hint))

    async def aget(
        self, key: str, default: T | None = None, *, type_hint: Any = None
    ) -> object | T | None:
        """:meth:`get` for async code (a remote backend is awaited)."""
        return await self._arun(self._get_flow(check_key(key), default, type_hint))

    def _get_flow(self, key: str, default: T | None, hint: Any) -> Flow[object]:
        entry = yield from self._read(key, hint)
        if entry is not None and not isinstance(entry[0], CachedError | RemoteError):
            state = classify(entry[1], self._clock.now())
            if state.servable:
                self._count_served(state, self._m)
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
    ) -> Flow[object]:
        key = check_key(key)
        opts = options or self.options
        tagset = check_tags(tags)
        self._fills.void(lambda f: f.key == key)
        meta = cast(EntryMeta, self._fills.meta(opts, delta=0.0, negative=False))
        ttl = remaining_ttl(meta, meta.stored_at)
        return (yield from raising(self._guard, "set", key, value, meta, ttl, tagset))

    def delete(self, key: str) -> bool:
        """Drop ``key``; loads of it in progress will not store. True if it existed."""
        return bool(self._run(self._delete_flow(key)))

    async def adelete(self, key: str) -> bool:
        """:meth:`delete` for async code."""
        return bool(await self._arun(self._delete_flow(key)))

    def _delete_flow(self, key: str) -> Flow[Any]:
        key = check_key(key)
        return self._invalidate(lambda f: f.key == key, "delete", key)

    def invalidate_tags(self, *tags: str) -> int:
        """Drop every entry tagged with any of ``tags`` (and void matching loads in
        progress); returns how many entries were dropped."""
        return int(self._run(self._tags_flow(tags)))

    async def ainvalidate_tags(self, *tags: str) -> int:
        """:meth:`invalidate_tags` for async code."""
        return int(await self._arun(self._tags_flow(tags)))

    def _tags_flow(self, tags: Iterable[str]) -> Flow[Any]:
        tagset = check_tags(tags)
        return self._invalidate(lambda f: not f.tags.isdisjoint(tagset), "delete_tags", tagset)

    def invalidate_namespace(self, namespace: str, version: int | str | None = None) -> int:
        """Drop every ``@cached`` entry of ``namespace`` (of one ``version`` if given)."""
        return int(self._run(self._namespace_flow(namespace, version)))

    async def ainvalidate_namespace(self, namespace: str, version: int | str | None = None) -> int:
        """:meth:`invalidate_namespace` for async code."""
        return int(await self._arun(self._namespace_flow(namespace, version)))

    def _namespace_flow(self, namespace: str, version: int | str | None) -> Flow[Any]:
        if not isinstance(namespace, str) or not namespace:
            raise ConfigurationError(f"namespace must be a non-empty str, got {namespace!r}")
        head = _key_head(self.prefix, namespace, version)
        return self._invalidate(lambda f: f.key.startswith(head), "delete_prefix", head)

    def clear(self) -> None:
        """Drop everything; loads in progress will not store."""
        self._run(self._invalidate(_every, "clear"))

    async def aclear(self) -> None:
        """:meth:`clear` for async code."""
        await self._arun(self._invalidate(_every, "clear"))

    def _invalidate(self, match: Callable[[Fill], bool], op: str, *args: Any) -> Flow[Any]:
        """An invalidation: void the matching loads in progress, then ``op`` on the
        backend (which moves the fences it covers, for loads of other processes)."""
        self._fills.void(match)
        result, exc = yield op, args
        if exc is None:
            self._guard.success()
            self._metrics.covering(op, args).invalidations.inc()
            return result
        if isinstance(exc, BackendError):
            self._guard.failure(exc)
            if self._defer:
                self._deferred.add(op, args, exc)
                return None if op == "clear" else 0
        raise exc

    @property
    def pending_invalidations(self) -> int:
        """Invalidations deferred and not applied yet (``on_invalidation_error="defer"``)."""
        return len(self._deferred)

    def drain_invalidations(self, timeout: float | None = None) -> bool:
        """Wait until the deferred invalidations are applied; True if none is left."""
        return self._deferred.drain(timeout)

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
        """The :class:`~scalekit.backends.RedisBackend` under the backend, if any
        (a tiered backend's is its L2's)."""
        backend: object = self.backend
        backend = getattr(backend, "l2", backend)
        return getattr(backend, "redis", None)

    def stats(self) -> CacheStats:
        """A snapshot of the counters: the cache's totals, and the same counters per
        namespace in ``namespaces`` (see :mod:`scalekit.cache._metrics`)."""
        parts = {c.namespace: self._stats_of(c) for c in self._metrics.sets()}
        total: dict[str, Any] = {f: sum(getattr(p, f) for p in parts.values()) for f in SUMMED}
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
            decode_errors=int(self.backend.decode_errors) if direct else 0,
            backend_errors=int(m.backend_errors.value) if direct else 0,
            coalesced=int(m.coalesced.value),
            invalidations=int(m.invalidations.value),
            invalidations_deferred=int(m.deferred.value),
        )

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
        key = check_key(key)
        opts = options or self.options
        tagset = check_tags(tags)
        entry, state = run(self._lookup_flow(key, opts, type_hint), self.backend)
        return self._serve_or_load(key, loader, tagset, opts, entry, state, (), type_hint, self._m)

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
        key = check_key(key)
        opts = options or self.options
        tagset = check_tags(tags)
        entry, state = await arun(self._lookup_flow(key, opts, type_hint), self.backend)
        return await self._aserve_or_load(
            key, loader, tagset, opts, entry, state, (), type_hint, self._m
        )

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
        for more than ``margin`` seconds; nothing happens either while another load
        of the key (in any process, on a remote backend) holds its lease, so a fleet
        refreshes once. Returns True if ``loader`` ran. Its exception propagates
        (nothing is stored). A remote backend that is down or cooling down: False
        (nothing ran). See :class:`~scalekit.cache.RefreshAhead` for the scheduled job.
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
    ) -> Flow[bool]:
        key = check_key(key)
        opts = options or self.options
        tagset = check_tags(tags)
        gap = min(check_margin(margin), FAR)
        fill = self._fills.open(key, tagset, (), hint, self._m)
        try:
            now = self._clock.now()
            begun = yield from degrading(self._guard, "begin_fill", key, tagset, (), now, hint, gap)
            if begun is DOWN or begun.state != "acquired":
                return False  # down, fresh enough, or another load holds the lease
            ticket = cast(FillTicket, begun)
            started = self._clock.now()
            value, exc = yield from self._load(ticket)
            if exc is not None:
                _, store = self._failed(fill, exc, opts, started, background=True)
                yield from self._finish(fill, ticket, store, opts)  # a negative entry, if asked
                raise exc
            _, store = self._loaded(fill, value, opts, started)
            yield from self._finish(fill, ticket, store, opts)
            return True
        finally:
            self._fills.close(fill)

    # --- the internal API of @cached and RefreshAhead ----------------------------------
    #
    # ``_run`` / ``_arun`` (run a flow), ``_read`` (the flow of an uncounted read),
    # ``_reader`` / ``_areader`` (the hit path's read), ``_metrics`` (the counter
    # set of a namespace: ``_metrics.of(namespace).hits.tick`` counts a hit),
    # ``_serve_or_load`` / ``_aserve_or_load`` (what follows a read), ``_clock`` (the
    # backend's time) and ``_in_process``. Nothing outside this module uses more.

    def _run(self, flow: Flow[R], loader: Callable[[], object] | None = None) -> R:
        """Run ``flow`` with the sync driver (blocking calls, ``loader()``)."""
        return run(flow, self.backend, loader)

    def _arun(
        self, flow: Flow[R], loader: Callable[[], Awaitable[object]] | None = None
    ) -> Awaitable[R]:
        """Run ``flow`` with the async driver (awaited twins, ``await loader()``)."""
        return arun(flow, self.backend, loader)

    def _read(self, key: str, hint: Any = None) -> Flow[Entry | None]:
        """A read, not counted, that degrades: a failing or cooling-down backend, or a
        data error about this key, is a miss."""
        entry = yield from degrading(self._guard, "get", key, hint)
        return None if entry is DOWN else cast("Entry | None", entry)

    def _reader(
        self, opts: CacheOptions, hint: Any = None
    ) -> Callable[[str], tuple[Entry | None, Freshness | None]]:
        """The hit path's read for one set of options: the entry and its state
        (nothing counted: count a plain hit on ``_metrics``, pass anything else
        to :meth:`_serve_or_load`). A closure over prebound locals, with no flow and
        no driver: an in-process backend's read is a call and a classification (it
        cannot fail), a remote one is one guarded call."""
        now, draw, beta, excs = self._clock.now, self._draw, opts.beta, opts.cache_exceptions
        get = self.backend.get
        if self._in_process:

            def read(key: str) -> tuple[Entry | None, Freshness | None]:
                entry = get(key)
                if entry is None:
                    return MISSING
                return entry, classify_unchecked(entry[1], now(), beta, draw)

            return read
        call = self._guard.call

        def read_remote(key: str) -> tuple[Entry | None, Freshness | None]:
            try:
                entry = call(lambda: get(key, hint), no_entry)
            except BackendDataError:  # about this key only: a miss
                return MISSING
            return MISSING if entry is None else classified(entry, excs, beta, now(), draw)

        return read_remote

    def _areader(
        self, opts: CacheOptions, hint: Any = None
    ) -> Callable[[str], Awaitable[tuple[Entry | None, Freshness | None]]]:
        """:meth:`_reader` for async code: the backend's read awaited (an in-process
        backend's hit path uses :meth:`_reader`: nothing to await)."""
        now, draw, beta, excs = self._clock.now, self._draw, opts.beta, opts.cache_exceptions
        acall, aget = self._guard.acall, self.backend.aget

        async def aread(key: str) -> tuple[Entry | None, Freshness | None]:
            try:
                entry = await acall(lambda: aget(key, hint), no_entry)
            except BackendDataError:
                return MISSING
            return MISSING if entry is None else classified(entry, excs, beta, now(), draw)

        return aread

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
        """What follows a read (``entry``, ``state`` from :meth:`_reader`): serve a
        servable entry (starting a background refresh if it needs one), else load
        ``key`` with ``loader``, one load per key in this process (threads wait).
        Counted on ``m``: the counters of the caller's namespace (default: direct
        calls')."""
        if m is None:
            m = self._m
        if self._served(state, m) and entry is not None:
            if state is not None and state.needs_refresh:
                start = self._start(key, tagset, heads, hint, opts, m, entry)
                self._flights.spawn(key, start, loader)
            return cast(T, unwrap(entry[0]))
        start = self._start(key, tagset, heads, hint, opts, m)
        outcome = self._flights.load(key, start, loader, opts._wait, m.coalesced)
        return cast(T, self._resolve(outcome, entry, m))

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
        """:meth:`_serve_or_load` for async code: one load task per key and event
        loop, awaited shielded by every caller (a cancelled caller stops waiting only)."""
        if m is None:
            m = self._m
        if self._served(state, m) and entry is not None:
            if state is not None and state.needs_refresh:
                start = self._start(key, tagset, heads, hint, opts, m, entry)
                self._flights.task(key, start, loader)
            return cast(T, unwrap(entry[0]))
        start = self._start(key, tagset, heads, hint, opts, m)
        outcome = await self._flights.aload(key, start, loader, opts._wait, m.coalesced)
        return cast(T, self._resolve(outcome, entry, m))

    def _start(
        self,
        key: str,
        tags: frozenset[str],
        heads: tuple[str, ...],
        hint: Any,
        opts: CacheOptions,
        m: CacheCounters,
        served: Entry | None = None,
    ) -> Callable[[bool], Flow[Outcome]]:
        """How single-flight starts a load of ``key`` (with the lease or not), counted
        on ``m``; with ``served``: a background refresh of that entry (see
        :meth:`_fill_flow`)."""
        seen = None if served is None else served[1]
        return lambda lease: self._fill_flow(key, tags, heads, hint, opts, m, lease, seen=seen)

    def _served(self, state: Freshness | None, m: CacheCounters) -> bool:
        """Count a read on ``m``: True if its entry is served (a hit, or stale), else
        a miss."""
        if state is not None and state.servable:
            self._count_served(state, m)
            return True
        m.misses.inc()
        return False

    def drain(self, timeout: float | None = None) -> bool:
        """Wait for the background refresh threads started so far; True if all ended."""
        return self._flights.drain(timeout)

    async def adrain(self) -> None:
        """Wait for the background refresh tasks of the running loop started so far."""
        await self._flights.adrain()

    # --- the fill flow ------------------------------------------------------------------

    def _fill_flow(
        self,
        key: str,
        tags: frozenset[str],
        heads: tuple[str, ...],
        hint: Any,
        opts: CacheOptions,
        m: CacheCounters,
        lease: bool = True,
        *,
        seen: EntryMeta | None = None,
    ) -> Flow[Outcome]:
        """One load of ``key``: begin (the fresh value another load stored, or this
        caller's lease), load, commit (fenced) or release; returns the outcome. A
        background refresh of the entry ``seen`` loads unless a value fresh beyond
        ``seen`` was stored since (then that value is its outcome). Counted on ``m``."""
        fill = self._fills.open(key, tags, heads, hint, m)
        try:
            margin = 0.0 if seen is None else max(0.0, fresh_until(seen) - self._clock.now())
            ticket, ready = yield from self._begin(fill, opts, lease=lease, margin=margin)
            if ready is not None:
                return ready
            started = self._clock.now()
            value, exc = yield from self._load(ticket)
            if exc is None:
                outcome, store = self._loaded(fill, value, opts, started)
            else:
                outcome, store = self._failed(fill, exc, opts, started, background=seen is not None)
            yield from self._finish(fill, ticket, store, opts)
            return outcome
        finally:
            self._fills.close(fill)

    def _load(self, ticket: FillTicket | None) -> Flow[tuple[object, Exception | None]]:
        """The load step; if it is aborted (a ``BaseException``: an interrupt, a
        cancelled task), the lease is given back before the abort propagates."""
        try:
            reply: tuple[object, Exception | None] = yield "load", None
        except BaseException:
            if ticket is not None:
                yield "release", (ticket,)
            raise
        return reply

    def _lookup_flow(
        self, key: str, opts: CacheOptions, hint: Any = None
    ) -> Flow[tuple[Entry | None, Freshness | None]]:
        """Read ``key`` and classify it (nothing counted). A random number for XFetch
        is drawn only when early refresh is enabled."""
        entry = yield from self._read(key, hint)
        if entry is None:
            return MISSING
        return classified(entry, opts.cache_exceptions, opts.beta, self._clock.now(), self._draw)

    def _draw(self) -> float:
        """XFetch's ``rand``, uniform in ``(0, 1]``."""
        return 1.0 - self._rng.random()

    def _count_served(self, state: Freshness, m: CacheCounters) -> None:
        if state is Freshness.STALE_REVALIDATE:
            m.stale.inc()
        else:
            next(m.hits.tick)

    def _begin(
        self, fill: Fill, opts: CacheOptions, *, lease: bool, margin: float
    ) -> Flow[tuple[FillTicket | None, Outcome | None]]:
        """Before a load: ``(None, outcome)`` if a value fresh beyond ``now + margin``
        is stored; else ``(ticket, None)``: this caller's lease, or none after
        waiting ``lock_timeout`` for another caller's load (polling), or when
        ``lease`` is False; ``(None, None)``: the backend is down (load, store
        nothing). A "fresh" value this reader cannot use (a cached exception of a
        class it does not list) is asked past at once, to load and overwrite it."""
        deadline = None if opts._wait is None else time.monotonic() + opts._wait
        delay, forced = POLL_FIRST, False
        while True:
            args = (fill.key, fill.tags, fill.heads, self._clock.now(), fill.hint, margin)
            ticket = yield from degrading(self._guard, "begin_fill", *args)
            if ticket is DOWN:
                return None, None
            if ticket.state == "fresh":
                entry = ticket.entry
                if entry is not None and type(entry[0]) is RemoteError:
                    entry = materialize(entry, opts.cache_exceptions)
                ready = None if entry is None else fresh_outcome(entry, self._clock.now())
                if ready is not None or forced:
                    return None, ready
                margin, forced = FAR, True
                continue
            if ticket.state == "acquired" or not lease:
                return ticket, None
            left = 1.0 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return ticket, None
            yield "sleep", min(delay, left)
            delay = min(delay * 2, POLL_MAX)

    def _finish(
        self, fill: Fill, ticket: FillTicket | None, store: object, opts: CacheOptions
    ) -> Flow[None]:
        """After a load: commit (fenced) or release the ticket. A negative entry
        never replaces a value that may still be served stale (read first)."""
        if ticket is None:
            return
        plan = None
        if store is not NOTHING:
            current = None
            if isinstance(store, CachedError):
                current = yield from self._read(fill.key, fill.hint)
            if current is None or not plan_after_load_failure(current[1], self._clock.now()):
                negative = store is None or isinstance(store, CachedError)
                plan = self._fills.meta(opts, delta=fill.delta, negative=negative, fill=fill)
        if plan is None:
            _, exc = yield "release", (ticket,)
        else:
            ttl = remaining_ttl(plan, plan.stored_at)
            _, exc = yield "commit_fill", (ticket, store, plan, ttl)
        if exc is None or isinstance(exc, BackendDataError):
            return  # a data error is about this key: not stored, the next read loads
        if isinstance(exc, BackendError):
            self._guard.failure(exc)
        elif isinstance(exc, SerializationError):
            self._store_failed(fill, exc)
            yield from degrading(self._guard, "release", ticket)
        else:
            raise exc

    def _store_failed(self, fill: Fill, exc: SerializationError) -> None:
        fill.m.load_errors.inc()
        first, self._warned = not self._warned, True
        (log.warning if first else log.debug)(
            "cache %r: the value of %r cannot be stored (%s); it is served but not cached",
            self.name,
            fill.key,
            exc,
        )

    def _loaded(
        self, fill: Fill, value: object, opts: CacheOptions, started: float
    ) -> tuple[Outcome, object]:
        """Count a load; returns the outcome and what to store (``NOTHING``: nothing).
        A value stored without a type (no annotation, no ``type_hint=``) must read
        back as itself on a JSON/msgpack backend; else it is served, not stored
        (logged once), never a ``dict`` on the next hit."""
        elapsed = max(0.0, self._clock.now() - started)
        store: object = NOTHING
        m = fill.m
        m.loads.inc()
        if elapsed:
            m.load_seconds.add(elapsed)
        storable = fill.hint is not None or self._plain is None or is_plain(value, self._plain)
        if not storable:
            self._store_failed(
                fill,
                SerializationError(
                    f"a {type(value).__name__} stored without a type would read back as "
                    f"plain data; annotate the function's return type or pass type_hint="
                ),
            )
        if storable and (value is not None or opts.cache_none) and self._fills.keep(fill, elapsed):
            store = value
        return Outcome(value), store

    def _failed(
        self, fill: Fill, exc: Exception, opts: CacheOptions, started: float, *, background: bool
    ) -> tuple[Outcome, object]:
        """Count a failed load; returns the outcome and the negative entry to store
        (``cache_exceptions``), if any."""
        elapsed = max(0.0, self._clock.now() - started)
        negative = bool(opts.cache_exceptions) and isinstance(exc, opts.cache_exceptions)
        m = fill.m
        m.loads.inc()
        m.load_errors.inc()
        if elapsed:
            m.load_seconds.add(elapsed)
        if background:
            log.debug("cache %r: background refresh of %r failed: %r", self.name, fill.key, exc)
        return Outcome(error=exc), CachedError(exc) if negative else NOTHING

    def _resolve(self, outcome: Outcome, stale: Entry | None, m: CacheCounters) -> object:
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


def _every(fill: Fill) -> bool:
    return True


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

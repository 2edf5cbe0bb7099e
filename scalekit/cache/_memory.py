"""The in-process cache backend: bounded, TTL + LRU, with a tag index.

:class:`MemoryCacheBackend` implements the whole backend protocol that
:class:`~scalekit.cache.Cache` drives (:class:`~scalekit.cache._backend.FencedCacheBackend`),
the same as the Redis backend::

    get(key)                          -> (value, EntryMeta) | None
    set(key, value, meta, ttl, tags)  store, drop after ``ttl`` seconds
    delete(key)                       -> bool
    delete_tags(tags)                 -> number of keys dropped
    delete_prefix(prefix)             -> number of keys dropped
    clear()
    begin_fill / commit_fill / release the fill protocol, with in-process leases
                                      and fences (see below)
    evictions                         LRU evictions so far

and the ``a``-prefixed async twins of the calls
(:class:`~scalekit.cache._backend.AsyncCacheBackend`),
which run the same code: nothing here does I/O.

Fills
-----
The same protocol as Redis' (:mod:`scalekit.cache._backend`), kept in this process:
``begin_fill`` answers a value fresh beyond ``now + margin``, else registers the
fill on the key's *fence* (an object in a dict, created by the first fill in
progress of the key, holding the tags of its fills) and tries the key's *lease*
(a token with a deadline, ``lease_ttl``). Every invalidation that covers a key
(``set``, ``delete``, ``delete_tags`` by the fills' tags, ``delete_prefix``,
``clear``) drops its fence and its lease, so a fill that began before it never
stores: ``commit_fill`` stores only if the key's fence is still the one the fill
read. A fence lives while fills of its key are in progress (or ``fence_ttl``, for
a fill that never ended), so the bookkeeping is bounded by concurrency.

Decisions
---------
- Values are kept as Python objects (no serialization): a cached list is the same
  object for every reader, so callers must not mutate what they get back. The
  Redis backend will serialize (``scalekit.serde``), which copies.
- Stdlib only: an :class:`~collections.OrderedDict` in recency order (a read moves
  the key to the end, an insert beyond ``max_entries`` pops the least recently
  used one and counts an eviction). ``cachetools`` is not a dependency.
- The storage TTL (``ttl`` of :meth:`set`) is when the entry may be dropped: the
  cache passes :func:`~scalekit.cache._freshness.remaining_ttl`, which covers both
  stale windows. Freshness itself is decided by the cache from the
  :class:`~scalekit.cache._freshness.EntryMeta`, never here. An entry past its
  storage TTL is dropped on read (lazily) and is not counted as an eviction.
- Time comes from ``clock=`` (monotonic by default); a :class:`Cache` built from
  ``"memory://"`` passes its own clock, so both read the same time.
- Thread-safe: writes take one :class:`threading.Lock` (no I/O, no awaits, so the
  async API uses it directly without blocking the loop for long); reads are
  lock-free (see :meth:`MemoryCacheBackend.get`).
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from scalekit import _validate
from scalekit._clock import Clock, as_clock
from scalekit.cache._backend import FillTicket
from scalekit.cache._freshness import EntryMeta
from scalekit.errors import ConfigurationError

__all__ = ["MemoryCacheBackend"]


class _Entry:
    __slots__ = ("drop_at", "pair", "tags")

    def __init__(
        self, value: object, meta: EntryMeta, drop_at: float, tags: frozenset[str]
    ) -> None:
        #: what get() returns, built once per write rather than on every read
        self.pair = (value, meta)
        self.drop_at = drop_at
        self.tags = tags


class _Fence:
    """The fills in progress of one key: replaced (dropped) by every invalidation
    of the key; a fill stores only if the key's fence is still the one it read."""

    __slots__ = ("fills", "name", "tags", "until")

    def __init__(self, name: str) -> None:
        self.name = name
        self.fills = 0
        self.tags: frozenset[str] = frozenset()
        self.until = 0.0


_fence_names = itertools.count(1)
_tokens = itertools.count(1)


class MemoryCacheBackend:
    """A bounded in-memory TTL + LRU store with a tag index and in-process fills.
    See the module docstring.

    :param max_entries: the bound (``>= 1``); the least recently used entry is
        evicted beyond it.
    :param clock: the time source for storage TTLs (and the cache's, when a
        :class:`~scalekit.cache.Cache` is given this backend).
    :param lease_ttl: how long a fill lease lives (seconds): the longest one load
        holds the other loads of a key off, if it never ends.
    :param fence_ttl: how long a fence outlives a fill that never ended; fills
        older than this never store.
    """

    __slots__ = (
        "_data",
        "_fences",
        "_leases",
        "_lock",
        "_prune_at",
        "_tags",
        "clock",
        "evictions",
        "fence_ttl",
        "lease_ttl",
        "max_entries",
    )

    #: no I/O: the cache reads it without its backend guard, straight from async code
    local = True
    #: values are Python objects here, never decoded
    decode_errors = 0

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        clock: Clock | Callable[[], float] | None = None,
        lease_ttl: float = 10.0,
        fence_ttl: float = 600.0,
    ) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ConfigurationError(f"max_entries must be an int >= 1, got {max_entries!r}")
        self.max_entries = max_entries
        self.lease_ttl = float(_validate.duration(lease_ttl, "lease_ttl"))
        self.fence_ttl = float(_validate.duration(fence_ttl, "fence_ttl"))
        self.clock: Clock = as_clock(clock)
        self._lock = threading.Lock()
        self._data: OrderedDict[str, _Entry] = OrderedDict()
        self._tags: dict[str, set[str]] = {}
        self._fences: dict[str, _Fence] = {}
        self._leases: dict[str, tuple[str, float]] = {}
        self._prune_at = 64
        #: entries dropped because the bound was reached
        self.evictions = 0

    def __repr__(self) -> str:
        return f"MemoryCacheBackend(max_entries={self.max_entries}, size={len(self._data)})"

    def __len__(self) -> int:
        return len(self._data)

    # --- the backend protocol ------------------------------------------------------

    def get(self, key: str, hint: object = None) -> tuple[object, EntryMeta] | None:
        """The value and metadata stored under ``key``, or None (missing or dropped).
        ``hint`` (the type a remote backend decodes to) is not needed here.

        Lock-free: a read is a dict lookup and an ``OrderedDict.move_to_end``, each
        one C call, atomic under the GIL; writers hold the lock. A read racing a
        write returns the entry it found (valid when it was read) or nothing. Only
        dropping an entry past its storage TTL takes the lock.
        """
        entry = self._data.get(key)
        if entry is None:
            return None
        if self.clock.now() >= entry.drop_at:
            with self._lock:
                if self._data.get(key) is entry:
                    self._remove(key, entry)
            return None
        try:
            self._data.move_to_end(key)
        except KeyError:  # dropped or replaced meanwhile: what was read stays valid
            pass
        return entry.pair

    def set(
        self,
        key: str,
        value: object,
        meta: EntryMeta,
        ttl: float,
        tags: Iterable[str] = (),
    ) -> None:
        """Store ``value`` with ``meta`` under ``key`` for ``ttl`` seconds, tagged;
        fills of ``key`` in progress will not store over it."""
        with self._lock:
            self._unfence(key)
            self._put(key, value, meta, ttl, frozenset(tags))

    def _put(
        self, key: str, value: object, meta: EntryMeta, ttl: float, tagset: frozenset[str]
    ) -> None:
        """Store an entry (call with the lock held)."""
        old = self._data.pop(key, None)
        if old is not None:
            self._untag(key, old.tags)
        self._data[key] = _Entry(value, meta, self.clock.now() + ttl, tagset)
        for tag in tagset:
            self._tags.setdefault(tag, set()).add(key)
        while len(self._data) > self.max_entries:
            victim, entry = self._data.popitem(last=False)
            self._untag(victim, entry.tags)
            self.evictions += 1

    def delete(self, key: str) -> bool:
        """Drop ``key``; True if it was stored."""
        with self._lock:
            self._unfence(key)
            entry = self._data.get(key)
            if entry is None:
                return False
            self._remove(key, entry)
            return True

    def delete_tags(self, tags: Iterable[str]) -> int:
        """Drop every key carrying any of ``tags``; returns how many were dropped."""
        dropped = 0
        tagset = frozenset(tags)
        with self._lock:
            for key in [k for k, f in self._fences.items() if not f.tags.isdisjoint(tagset)]:
                self._unfence(key)
            for tag in tagset:
                for key in list(self._tags.get(tag, ())):
                    entry = self._data.get(key)
                    if entry is not None:
                        self._remove(key, entry)
                        dropped += 1
                self._tags.pop(tag, None)
        return dropped

    def delete_prefix(self, prefix: str) -> int:
        """Drop every key starting with ``prefix``; returns how many were dropped."""
        with self._lock:
            for key in [k for k in self._fences if k.startswith(prefix)]:
                self._unfence(key)
            # a snapshot (one C call): lock-free readers reorder the dict meanwhile
            victims = [(k, e) for k, e in list(self._data.items()) if k.startswith(prefix)]
            for key, entry in victims:
                self._remove(key, entry)
        return len(victims)

    def clear(self) -> None:
        """Drop everything (the eviction counter is kept)."""
        with self._lock:
            self._data.clear()
            self._tags.clear()
            self._fences.clear()
            self._leases.clear()

    # --- fills ----------------------------------------------------------------------

    def begin_fill(
        self,
        key: str,
        tags: frozenset[str],
        heads: Sequence[str],
        now: float,
        hint: Any = None,
        margin: float = 0.0,
    ) -> FillTicket:
        """The entry if it stays fresh beyond ``now + margin``; else the fill is
        registered on the key's fence and this caller gets the lease (``acquired``)
        or not (``held``). ``heads`` and ``hint`` are not needed here."""
        with self._lock:
            entry = self._data.get(key)
            t = self.clock.now()
            if entry is not None and t < entry.drop_at:
                meta = entry.pair[1]
                if now + margin < meta.stored_at + meta.ttl:
                    return FillTicket("fresh", key, tags, entry=entry.pair)
            fence = self._fences.get(key)
            if fence is None or fence.until <= t:
                if len(self._fences) >= self._prune_at:
                    self._prune(t)
                fence = self._fences[key] = _Fence(str(next(_fence_names)))
            fence.fills += 1
            fence.tags |= tags
            fence.until = t + self.fence_ttl
            token = str(next(_tokens))  # unique in this process: all a lease needs
            lease = self._leases.get(key)
            acquired = lease is None or lease[1] <= t
            if acquired:
                self._leases[key] = (token, t + self.lease_ttl)
            return FillTicket(
                "acquired" if acquired else "held",
                key,
                tags,
                token=token,
                seen=(fence.name,),
                started=t,
            )

    def commit_fill(self, ticket: FillTicket, value: object, meta: EntryMeta, ttl: float) -> bool:
        """Store the loaded value if no invalidation moved the fill's fence since
        :meth:`begin_fill`; release the lease either way. True if stored."""
        with self._lock:
            fence = self._end(ticket)
            ok = fence is not None and self.clock.now() - ticket.started < self.fence_ttl
            if ok:
                self._put(ticket.key, value, meta, ttl, ticket.tags)
            return ok

    def release(self, ticket: FillTicket) -> None:
        """End a fill without storing (its lease, if held, is given back)."""
        with self._lock:
            self._end(ticket)

    def _end(self, ticket: FillTicket) -> _Fence | None:
        """A fill ends (lock held): its lease released; the key's fence if it is
        still the one the fill read (dropped once its last fill ended)."""
        key = ticket.key
        lease = self._leases.get(key)
        if lease is not None and lease[0] == ticket.token:
            del self._leases[key]
        fence = self._fences.get(key)
        if fence is None or not ticket.seen or fence.name != ticket.seen[0]:
            return None
        fence.fills -= 1
        if fence.fills <= 0:
            del self._fences[key]
        return fence

    def _unfence(self, key: str) -> None:
        """An invalidation of ``key`` (lock held): its fills in progress will not store."""
        self._fences.pop(key, None)
        self._leases.pop(key, None)

    def _prune(self, now: float) -> None:
        """Drop the fences of fills that never ended (lock held; amortized)."""
        for key in [k for k, f in self._fences.items() if f.until <= now]:
            del self._fences[key]
        for key in [k for k, (_, until) in self._leases.items() if until <= now]:
            del self._leases[key]
        self._prune_at = max(64, 2 * len(self._fences))

    async def abegin_fill(self, *args: Any, **kwargs: Any) -> FillTicket:
        """:meth:`begin_fill` (same arguments; nothing to await)."""
        return self.begin_fill(*args, **kwargs)

    async def acommit_fill(
        self, ticket: FillTicket, value: object, meta: EntryMeta, ttl: float
    ) -> bool:
        return self.commit_fill(ticket, value, meta, ttl)

    async def arelease(self, ticket: FillTicket) -> None:
        self.release(ticket)

    # --- the async protocol: the same calls (no I/O, nothing to await) ----------------

    async def aget(self, key: str, hint: object = None) -> tuple[object, EntryMeta] | None:
        return self.get(key, hint)

    async def aset(self, *args: Any, **kwargs: Any) -> None:
        """:meth:`set` (same arguments; nothing to await)."""
        self.set(*args, **kwargs)

    async def adelete(self, key: str) -> bool:
        return self.delete(key)

    async def adelete_tags(self, tags: Iterable[str]) -> int:
        return self.delete_tags(tags)

    async def adelete_prefix(self, prefix: str) -> int:
        return self.delete_prefix(prefix)

    async def aclear(self) -> None:
        self.clear()

    # --- internals -------------------------------------------------------------------

    def _remove(self, key: str, entry: _Entry) -> None:
        del self._data[key]
        self._untag(key, entry.tags)

    def _untag(self, key: str, tags: frozenset[str]) -> None:
        for tag in tags:
            keys = self._tags.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._tags[tag]

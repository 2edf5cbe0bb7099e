"""The in-process cache backend: bounded, TTL + LRU, with a tag index.

:class:`MemoryCacheBackend` implements the small backend protocol that
:class:`scalekit.cache.core.Cache` drives (:class:`scalekit.cache.core.CacheBackend`)::

    get(key)                          -> (value, EntryMeta) | None
    set(key, value, meta, ttl, tags)  store, drop after ``ttl`` seconds
    delete(key)                       -> bool
    delete_tags(tags)                 -> number of keys dropped
    delete_prefix(prefix)             -> number of keys dropped
    clear()
    evictions                         LRU evictions so far

and the ``a``-prefixed async twins of the calls
(:class:`~scalekit.cache.backend.AsyncCacheBackend`),
which run the same code: nothing here does I/O.

Decisions
---------
- Values are kept as Python objects (no serialization): a cached list is the same
  object for every reader, so callers must not mutate what they get back. The
  Redis backend will serialize (``scalekit.serde``), which copies.
- Stdlib only: an :class:`~collections.OrderedDict` in recency order (a read moves
  the key to the end, an insert beyond ``max_entries`` pops the least recently
  used one and counts an eviction). ``cachetools`` is not a dependency.
- The storage TTL (``ttl`` of :meth:`set`) is when the entry may be dropped: the
  cache passes :func:`~scalekit.cache.freshness.remaining_ttl`, which covers both
  stale windows. Freshness itself is decided by the cache from the
  :class:`~scalekit.cache.freshness.EntryMeta`, never here. An entry past its
  storage TTL is dropped on read (lazily) and is not counted as an eviction.
- Time comes from ``clock=`` (monotonic by default); a :class:`Cache` built from
  ``"memory://"`` passes its own clock, so both read the same time.
- Thread-safe: writes take one :class:`threading.Lock` (no I/O, no awaits, so the
  async API uses it directly without blocking the loop for long); reads are
  lock-free (see :meth:`MemoryCacheBackend.get`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable

from scalekit._clock import Clock, as_clock
from scalekit.cache.freshness import EntryMeta
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


class MemoryCacheBackend:
    """A bounded in-memory TTL + LRU store with a tag index. See the module docstring.

    :param max_entries: the bound (``>= 1``); the least recently used entry is
        evicted beyond it.
    :param clock: the time source for storage TTLs.
    """

    __slots__ = ("_clock", "_data", "_lock", "_tags", "evictions", "max_entries")

    #: no I/O: the cache calls it under its lock and straight from async code
    local = True
    #: values are Python objects here, never decoded
    decode_errors = 0

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        clock: Clock | Callable[[], float] | None = None,
    ) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ConfigurationError(f"max_entries must be an int >= 1, got {max_entries!r}")
        self.max_entries = max_entries
        self._clock = as_clock(clock)
        self._lock = threading.Lock()
        self._data: OrderedDict[str, _Entry] = OrderedDict()
        self._tags: dict[str, set[str]] = {}
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
        if self._clock.now() >= entry.drop_at:
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
        """Store ``value`` with ``meta`` under ``key`` for ``ttl`` seconds, tagged."""
        tagset = frozenset(tags)
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._untag(key, old.tags)
            self._data[key] = _Entry(value, meta, self._clock.now() + ttl, tagset)
            for tag in tagset:
                self._tags.setdefault(tag, set()).add(key)
            while len(self._data) > self.max_entries:
                victim, entry = self._data.popitem(last=False)
                self._untag(victim, entry.tags)
                self.evictions += 1

    def delete(self, key: str) -> bool:
        """Drop ``key``; True if it was stored."""
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return False
            self._remove(key, entry)
            return True

    def delete_tags(self, tags: Iterable[str]) -> int:
        """Drop every key carrying any of ``tags``; returns how many were dropped."""
        dropped = 0
        with self._lock:
            for tag in tags:
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

    # --- the async protocol: the same calls (no I/O, nothing to await) ----------------

    async def aget(self, key: str, hint: object = None) -> tuple[object, EntryMeta] | None:
        return self.get(key, hint)

    async def aset(
        self,
        key: str,
        value: object,
        meta: EntryMeta,
        ttl: float,
        tags: Iterable[str] = (),
    ) -> None:
        self.set(key, value, meta, ttl, tags)

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

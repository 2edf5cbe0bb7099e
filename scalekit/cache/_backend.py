"""The cache backend protocol and the markers every backend stores.

:class:`~scalekit.cache.Cache` drives every backend through one protocol,
:class:`FencedCacheBackend`: reads, writes and invalidations (:class:`CacheBackend`),
their ``a``-prefixed async twins (:class:`AsyncCacheBackend`), a ``clock`` (the
time entries are stored with; the cache reads it too) and the fill protocol. The
in-process :class:`~scalekit.cache.MemoryCacheBackend` (``local = True``: Python
objects, no I/O, so its twins call the sync methods and the cache reads it without
its backend guard) keeps leases and fences in a dict; the fleet-shared
:class:`~scalekit.cache.RedisCacheBackend` and
:class:`~scalekit.cache.TieredCacheBackend` (``local = False``) serialize and keep
them on the server. The fill protocol:

  ``begin_fill(key, tags, heads, now, hint, margin)`` -> :class:`FillTicket`
      on a miss or a refresh only: answers the entry if it is fresh beyond
      ``now + margin`` (a background refresh passes the freshness it saw, so a
      value another refresher stored since is used, not loaded again), else tries
      to take the key's lease (``acquired``, or ``held`` by another process) and
      *registers* the fill where every invalidation covering it will find it (on
      Redis: the key's fence, created or kept and read, and its tags' sets); never
      called on a hit. ``heads`` (the ``@cached`` namespace heads) is for
      backends that fence prefixes by name; Redis finds prefixes by ``SCAN``.
  ``commit_fill(ticket, value, meta, ttl)`` -> bool
      stores the loaded value only if no invalidation moved the fill's fence
      since ``begin_fill`` (atomically with the write, on the server), and
      releases the lease.

  Every invalidation moves the fences it covers, so a load that began before an
  invalidation never stores its value after the invalidation returned, whichever
  process ran either of them.

A value that cannot be decoded, and a reply that is an error about one key's data
(:class:`~scalekit.errors.BackendDataError`, e.g. ``WRONGTYPE``), is a miss
(counted in ``decode_errors``), never an exception and never a backend failure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn, Protocol, runtime_checkable

from scalekit._clock import Clock
from scalekit.cache._freshness import EntryMeta

__all__ = [
    "AsyncCacheBackend",
    "CacheBackend",
    "CachedError",
    "FencedCacheBackend",
    "FillTicket",
    "RemoteError",
]

Entry = tuple[object, EntryMeta]


class CachedError:
    """A negative entry: the exception a loader raised, re-raised on reads."""

    __slots__ = ("error", "tb")

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.tb = error.__traceback__

    def reraise(self) -> NoReturn:
        # from the loader's traceback each time: re-raising one instance would
        # otherwise grow its traceback on every read
        raise self.error.with_traceback(self.tb)


@dataclass(frozen=True, slots=True)
class RemoteError:
    """A negative entry read back from a remote backend: the exception's class by
    name and its arguments. The cache turns it back into an exception only if the
    class is one of the reader's ``cache_exceptions`` (no import by name, ever);
    otherwise the entry is a miss."""

    module: str
    qualname: str
    args: tuple[Any, ...]


@dataclass(slots=True)
class FillTicket:
    """What :meth:`CacheBackend.begin_fill` answers (see the module docstring).

    ``state``: ``"fresh"`` (``entry`` holds the fresh entry: no load needed),
    ``"acquired"`` (this caller holds the lease: load and commit), ``"held"``
    (another process is loading: wait, or load without the lease after the
    timeout). ``fences`` / ``seen``: the fence keys and the values read;
    ``started``: the backend clock at the read; ``token``: this caller's lease token.
    """

    state: Literal["fresh", "acquired", "held"]
    key: str
    tags: frozenset[str] = frozenset()
    entry: Entry | None = None
    token: str = ""
    fences: tuple[str, ...] = ()
    seen: tuple[str, ...] = ()
    started: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class CacheBackend(Protocol):
    """The reads, writes and invalidations of a cache backend. A backend a
    :class:`~scalekit.cache.Cache` drives implements all of
    :class:`FencedCacheBackend` (these, their async twins and the fill protocol).
    See the module docstring.
    """

    local: bool

    @property
    def evictions(self) -> int:
        """Entries dropped because a bound was reached (0 where unknown)."""
        ...

    def get(self, key: str, hint: Any = None) -> Entry | None: ...

    def set(
        self, key: str, value: object, meta: EntryMeta, ttl: float, tags: Iterable[str] = ()
    ) -> None: ...

    def delete(self, key: str) -> bool: ...

    def delete_tags(self, tags: Iterable[str]) -> int: ...

    def delete_prefix(self, prefix: str) -> int: ...

    def clear(self) -> None: ...


@runtime_checkable
class AsyncCacheBackend(Protocol):
    """The async twins of :class:`CacheBackend`'s calls (same arguments, same answers)."""

    async def aget(self, key: str, hint: Any = None) -> Entry | None: ...

    async def aset(
        self, key: str, value: object, meta: EntryMeta, ttl: float, tags: Iterable[str] = ()
    ) -> None: ...

    async def adelete(self, key: str) -> bool: ...

    async def adelete_tags(self, tags: Iterable[str]) -> int: ...

    async def adelete_prefix(self, prefix: str) -> int: ...

    async def aclear(self) -> None: ...


@runtime_checkable
class FencedCacheBackend(CacheBackend, AsyncCacheBackend, Protocol):
    """What a :class:`~scalekit.cache.Cache` drives: :class:`CacheBackend`, its
    async twins, the clock entries are stored with, and the fill protocol (see the
    module docstring), sync and async."""

    clock: Clock

    @property
    def decode_errors(self) -> int:
        """Entries that could not be decoded (served as misses)."""
        ...

    def begin_fill(
        self,
        key: str,
        tags: frozenset[str],
        heads: Sequence[str],
        now: float,
        hint: Any = None,
        margin: float = 0.0,
    ) -> FillTicket: ...

    async def abegin_fill(
        self,
        key: str,
        tags: frozenset[str],
        heads: Sequence[str],
        now: float,
        hint: Any = None,
        margin: float = 0.0,
    ) -> FillTicket: ...

    def commit_fill(
        self, ticket: FillTicket, value: object, meta: EntryMeta, ttl: float
    ) -> bool: ...

    async def acommit_fill(
        self, ticket: FillTicket, value: object, meta: EntryMeta, ttl: float
    ) -> bool: ...

    def release(self, ticket: FillTicket) -> None: ...

    async def arelease(self, ticket: FillTicket) -> None: ...

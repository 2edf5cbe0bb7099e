"""The cache's metrics: native counters in :mod:`scalekit.observability`'s registry.

Every family below is labelled ``cache`` (the cache's ``name``) and ``namespace``,
both bounded by code and configuration, never a user key:

- a ``@cached`` function counts under its namespace (the ``namespace=`` it was
  given, by default ``module.qualname``): the decorator resolves that namespace's
  :class:`CacheCounters` once, at decoration time, and hands it to the engine, so
  the hit path counts on a counter it already holds (no lookup per call);
- direct calls (``Cache.get``/``get_or_load``/``refresh``...) count under
  :data:`DIRECT` (``"-"``), and so do the cache-wide figures no call owns
  (backend errors and decode errors: their series exist under ``"-"`` only);
- an invalidation counts under the namespace whose entries it drops (``delete`` of a
  ``@cached`` key, ``invalidate_namespace``) when that namespace is one a ``@cached``
  function of this cache declared, else (tags, ``clear``, keys of no known
  namespace) under ``"-"``.

A cache holds at most :data:`MAX_NAMESPACES` namespaces; further ones share one
``"_other"`` set (the registry also folds series past its ``max_series`` into
``"_other"``). Label values hold 128 characters; a longer namespace is cut there.

:class:`CacheMetrics` is one cache's table of counter sets. ``Cache.stats()`` sums
them (the totals of the cache) and breaks them down in ``CacheStats.namespaces``.
Each set's children belong to their cache (``Family.attach``), so two caches named
alike keep their own counts while the exported series of that name sums both. A hit
is one call to an ``itertools.count``'s ``__next__`` (``Counter.tick``). The names
are those of the ``"cache"`` shape in :mod:`scalekit.observability._sources`.
"""

from __future__ import annotations

import threading
import weakref

from scalekit._keys import escape
from scalekit.observability._metrics import OVERFLOW, Counter, Family, default_registry

__all__ = ["DIRECT", "MAX_NAMESPACES", "CacheCounters", "CacheMetrics"]

#: the namespace label of direct calls and of cache-wide figures
DIRECT = "-"
#: namespaces one cache tracks; further ones share the ``"_other"`` set
MAX_NAMESPACES = 1000

_LABELS = ("cache", "namespace")
_MAX_LABEL = 128  # a label value holds 128 characters


def _counter(name: str, help: str, unit: str = "") -> Family[Counter]:
    return default_registry.counter(name, help, labels=_LABELS, unit=unit)


HITS = _counter("scalekit_cache_hits_total", "Reads answered from the cache.")
MISSES = _counter("scalekit_cache_misses_total", "Reads that found nothing fresh.")
STALE = _counter(
    "scalekit_cache_stale_served_total", "Reads answered with a stale value while a refresh ran."
)
LOADS = _counter("scalekit_cache_loads_total", "Loader calls.")
LOAD_ERRORS = _counter("scalekit_cache_load_errors_total", "Loader calls that raised.")
LOAD_SECONDS = _counter(
    "scalekit_cache_load_seconds_total", "Time spent in the loader.", unit="seconds"
)
DECODE_ERRORS = _counter(
    "scalekit_cache_decode_errors_total", "Entries that could not be decoded (served as misses)."
)
BACKEND_ERRORS = _counter("scalekit_cache_backend_errors_total", "Backend calls that failed.")
COALESCED = _counter(
    "scalekit_cache_coalesced_total", "Callers that waited for a load another caller ran."
)
INVALIDATIONS = _counter(
    "scalekit_cache_invalidations_total",
    "Invalidations applied (delete, tags, namespace, clear).",
)
DEFERRED = _counter(
    "scalekit_cache_invalidations_deferred_total",
    "Invalidations queued while the backend failed (applied when it answers).",
)


class CacheCounters:
    """The counters of one cache and one namespace, exported under both.

    A namespace's set takes ``backend_errors`` and ``decode_errors`` from
    ``direct`` (the same counters: no call owns those, and a series that is always
    zero is not exported)."""

    __slots__ = (
        "backend_errors",
        "coalesced",
        "decode_errors",
        "deferred",
        "hits",
        "invalidations",
        "load_errors",
        "load_seconds",
        "loads",
        "misses",
        "namespace",
        "stale",
    )

    def __init__(
        self,
        owner: object,
        name: str,
        namespace: str = DIRECT,
        direct: CacheCounters | None = None,
    ) -> None:
        self.namespace = namespace
        labels = (name[:_MAX_LABEL], namespace[:_MAX_LABEL])

        def make(family: Family[Counter]) -> Counter:
            child: Counter = family.attach(owner, *labels)
            return child

        self.hits = make(HITS)
        self.misses = make(MISSES)
        self.stale = make(STALE)
        self.loads = make(LOADS)
        self.load_errors = make(LOAD_ERRORS)
        self.load_seconds = make(LOAD_SECONDS)
        if direct is None:
            self.decode_errors = make(DECODE_ERRORS)
            self.backend_errors = make(BACKEND_ERRORS)
        else:
            self.decode_errors = direct.decode_errors
            self.backend_errors = direct.backend_errors
        self.coalesced = make(COALESCED)
        self.invalidations = make(INVALIDATIONS)
        self.deferred = make(DEFERRED)


class CacheMetrics:
    """One cache's counter sets, one per namespace (:data:`DIRECT` first).

    ``of(namespace)`` returns that namespace's set, creating it once (at decoration
    time); ``covering(op, args)`` the set an invalidation is counted on; ``sets()``
    every set, for ``stats()``.
    """

    __slots__ = ("_by_head", "_by_name", "_lock", "_name", "_owner", "_prefix", "direct")

    def __init__(self, owner: object, name: str, prefix: str) -> None:
        # weakly: the cache holds this table, and must stay collectable by refcount
        self._owner = weakref.ref(owner)
        self._name = name
        self._prefix = prefix + ":"
        self._lock = threading.Lock()
        self.direct = CacheCounters(owner, name)
        self._by_name: dict[str, CacheCounters] = {DIRECT: self.direct}
        # escaped namespace (as it appears in keys) -> its set
        self._by_head: dict[str, CacheCounters] = {}

    def of(self, namespace: str) -> CacheCounters:
        """The counters of ``namespace`` (created on first use; bounded)."""
        found = self._by_name.get(namespace)
        if found is not None:
            return found
        with self._lock:
            found = self._by_name.get(namespace)
            owner = self._owner()
            if found is None:
                if owner is None:  # the cache is gone: nothing will read these counts
                    return self.direct
                if len(self._by_name) > MAX_NAMESPACES:
                    return self._overflow(owner)
                found = CacheCounters(owner, self._name, namespace, self.direct)
                self._by_name[namespace] = found
                self._by_head[escape(namespace)] = found
            return found

    def _overflow(self, owner: object) -> CacheCounters:
        """The shared set of namespaces past the bound (lock held)."""
        found = self._by_name.get(OVERFLOW)
        if found is None:
            found = CacheCounters(owner, self._name, OVERFLOW, self.direct)
            self._by_name[OVERFLOW] = found
        return found

    def covering(self, op: str, args: tuple[object, ...]) -> CacheCounters:
        """The set an invalidation ``op`` (a backend method) with ``args`` counts on:
        the known namespace whose keys it drops, else :attr:`direct`. Never creates
        a set: a namespace no ``@cached`` function declared is not a label."""
        if op in ("delete", "delete_prefix") and args and isinstance(args[0], str):
            text = args[0]
            if text.startswith(self._prefix):
                segment = text[len(self._prefix) :].partition(":")[0]
                return self._by_head.get(segment, self.direct)
        return self.direct

    def sets(self) -> list[CacheCounters]:
        """Every set, :attr:`direct` first."""
        with self._lock:
            return list(self._by_name.values())

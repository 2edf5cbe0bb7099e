"""The cache's metrics: native counters in :mod:`scalekit.observability`'s registry.

Every :class:`~scalekit.cache._core.Cache` owns one counter of each family below
(``Family.attach``), labelled ``cache`` (the cache's ``name``): bounded by
configuration, never a user key. :meth:`Cache.stats` reads the cache's own
counters, so two caches named alike keep their own counts while the exported
series of that name sums both. A hit is one call to an ``itertools.count``'s
``__next__`` (``Counter.tick``): what the ``itertools.count`` it replaces cost.
The names are those of the ``"cache"`` shape in
:mod:`scalekit.observability._sources`, plus ``coalesced`` and ``invalidations``.
"""

from __future__ import annotations

from scalekit.observability._metrics import Counter, Family, default_registry

__all__ = ["CacheCounters"]

_LABELS = ("cache",)


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
    """One cache's counters, exported under its name."""

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
        "stale",
    )

    def __init__(self, owner: object, name: str) -> None:
        label = name[:128]  # a label value holds 128 characters

        def make(family: Family[Counter]) -> Counter:
            child: Counter = family.attach(owner, label)
            return child

        self.hits = make(HITS)
        self.misses = make(MISSES)
        self.stale = make(STALE)
        self.loads = make(LOADS)
        self.load_errors = make(LOAD_ERRORS)
        self.load_seconds = make(LOAD_SECONDS)
        self.decode_errors = make(DECODE_ERRORS)
        self.backend_errors = make(BACKEND_ERRORS)
        self.coalesced = make(COALESCED)
        self.invalidations = make(INVALIDATIONS)
        self.deferred = make(DEFERRED)

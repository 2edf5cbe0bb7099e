"""TTL query cache: ``@cached``, ``Cache`` and the in-memory backend.

Work in progress (issue 3): the memory backend, single-flight, freshness windows,
tags and invalidation are here; the Redis and tiered backends come next, and the
names are re-exported from ``scalekit`` when the issue is complete. See
:mod:`scalekit.cache.core` for the semantics.
"""

from __future__ import annotations

from scalekit.cache.core import Cache, CacheBackend, CacheOptions, CacheStats, default_cache
from scalekit.cache.decorator import cache_key, cache_of, cached, invalidate
from scalekit.cache.freshness import EntryMeta, Freshness
from scalekit.cache.keys import KeyBuilder
from scalekit.cache.memory import MemoryCacheBackend

__all__ = [
    "Cache",
    "CacheBackend",
    "CacheOptions",
    "CacheStats",
    "EntryMeta",
    "Freshness",
    "KeyBuilder",
    "MemoryCacheBackend",
    "cache_key",
    "cache_of",
    "cached",
    "default_cache",
    "invalidate",
]

"""TTL query cache: ``@cached``, ``Cache``, and the memory, Redis and tiered backends.

See :mod:`scalekit.cache.core` for the semantics (freshness, single-flight,
invalidation, negative caching, metrics), :mod:`scalekit.cache.redis` for the
fleet-shared backend (leases, fences, serialization, time) and
:mod:`scalekit.cache.tiered` for the in-process L1 in front of it.
"""

from __future__ import annotations

from scalekit.cache.backend import CacheBackend
from scalekit.cache.core import Cache, CacheOptions, CacheStats, default_cache
from scalekit.cache.decorator import ainvalidate, cache_key, cache_of, cached, invalidate
from scalekit.cache.freshness import EntryMeta, Freshness
from scalekit.cache.keys import KeyBuilder
from scalekit.cache.memory import MemoryCacheBackend
from scalekit.cache.redis import RedisCacheBackend
from scalekit.cache.refresh import RefreshAhead
from scalekit.cache.tiered import TieredCacheBackend

__all__ = [
    "Cache",
    "CacheBackend",
    "CacheOptions",
    "CacheStats",
    "EntryMeta",
    "Freshness",
    "KeyBuilder",
    "MemoryCacheBackend",
    "RedisCacheBackend",
    "RefreshAhead",
    "TieredCacheBackend",
    "cache_key",
    "cache_of",
    "cached",
    "default_cache",
    "ainvalidate",
    "invalidate",
]

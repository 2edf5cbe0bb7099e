"""TTL query cache: ``@cached``, ``Cache``, and the memory, Redis and tiered backends.

See :mod:`scalekit.cache._core` for the semantics (freshness, single-flight,
invalidation, negative caching, metrics), :mod:`scalekit.cache._redis` for the
fleet-shared backend (leases, fences, serialization, time) and
:mod:`scalekit.cache._tiered` for the in-process L1 in front of it.
"""

from __future__ import annotations

from scalekit.cache._backend import CacheBackend
from scalekit.cache._core import Cache, CacheOptions, CacheStats, default_cache
from scalekit.cache._decorator import ainvalidate, cache_key, cache_of, cached, invalidate
from scalekit.cache._freshness import EntryMeta, Freshness
from scalekit.cache._keys import KeyBuilder
from scalekit.cache._memory import MemoryCacheBackend
from scalekit.cache._redis import RedisCacheBackend
from scalekit.cache._refresh import RefreshAhead
from scalekit.cache._tiered import TieredCacheBackend

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

"""TTL query cache: ``@cached``, ``Cache``, and the memory, Redis and tiered backends.

``__all__`` below is the public surface; the modules are private. Where to read:
``_core.py`` (the cache: what a read means, when to load, what to store),
``_engine.py`` (the fill engine's two drivers), ``_flights.py`` (single-flight),
``_guard.py`` (failing backends, deferred invalidations), ``_backend.py`` (the one
backend protocol), ``_memory.py`` / ``_redis.py`` / ``_tiered.py`` (the backends),
``_decorator.py`` (``@cached``), ``_refresh.py`` (``RefreshAhead``), ``_metrics.py``
(the counters, per namespace), ``_keys.py`` and ``_freshness.py`` (pure key
building and freshness maths).
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

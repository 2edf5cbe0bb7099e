"""A cache backend from a URL (or a backend object, checked): the cache's schemes."""

from __future__ import annotations

from urllib.parse import urlsplit

from scalekit._clock import Clock
from scalekit.backends import memory_bound, parse_backend_url
from scalekit.cache._backend import AsyncCacheBackend, FencedCacheBackend
from scalekit.cache._memory import MemoryCacheBackend
from scalekit.errors import ConfigurationError
from scalekit.serde import Serializer

__all__ = ["backend_from"]

_REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")


def backend_from(
    backend: str | object,
    clock: Clock,
    max_entries: int | None,
    serializer: str | Serializer,
    clock_given: bool,
) -> FencedCacheBackend:
    """The backend a :class:`~scalekit.cache.Cache` drives: ``memory://`` (on
    ``clock``), a Redis URL (``clock`` only if given: tests), ``tiered+<redis URL>``,
    or a backend object implementing the whole protocol."""
    if not isinstance(backend, str):
        if not isinstance(backend, FencedCacheBackend) or not isinstance(
            backend, AsyncCacheBackend
        ):
            raise ConfigurationError(
                f"backend must be a URL ('memory://', 'redis://...') or a cache backend "
                f"object (get/set/delete/delete_tags/delete_prefix/clear, begin_fill/"
                f"commit_fill/release, their a-prefixed async twins and a clock), "
                f"got {backend!r}"
            )
        return backend
    parts = urlsplit(backend)
    scheme = parts.scheme
    tiered = scheme.startswith("tiered+")
    if scheme.removeprefix("tiered+") in _REDIS_SCHEMES:
        from scalekit.cache._redis import RedisCacheBackend

        l2 = RedisCacheBackend(
            backend.removeprefix("tiered+"),
            serializer=serializer,
            clock=clock if clock_given else None,
        )
        if not tiered:
            return l2
        from scalekit.cache._tiered import TieredCacheBackend

        return TieredCacheBackend(l2)
    if parts.scheme != "memory":
        raise ConfigurationError(
            f"cache backend URL {backend!r}: scheme {parts.scheme!r} is not supported; "
            f"supported: 'memory://' (optionally 'memory://?max_entries=N'), "
            f"'redis://', 'rediss://', 'unix://', 'redis+cluster://', 'rediss+cluster://' "
            f"(each with a 'tiered+' prefix for a memory L1 in front of Redis)"
        )
    # the one URL grammar: unknown or misspelt options are refused
    _, parsed = parse_backend_url(backend)
    n = memory_bound(parsed).get("max_keys", max_entries)
    return MemoryCacheBackend(max_entries=10_000 if n is None else n, clock=clock)

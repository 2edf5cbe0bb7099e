"""A cache backend from a URL (or a backend object, checked): the cache's schemes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast
from urllib.parse import urlsplit

from scalekit._clock import Clock
from scalekit.backends import _memory_bound, parse_backend_url
from scalekit.cache._backend import AsyncCacheBackend, FencedCacheBackend
from scalekit.cache._engine import JSON_PLAIN, MSGPACK_PLAIN
from scalekit.cache._memory import MemoryCacheBackend
from scalekit.errors import ConfigurationError
from scalekit.observability._metrics import Counter
from scalekit.serde import JsonSerializer, MsgpackSerializer, Serializer

__all__ = ["backend_from", "plain_types", "share_decode_counter"]

_REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")


def backend_from(
    backend: str | object,
    clock: Clock | Callable[[], float] | None,
    max_entries: int | None,
    serializer: str | Serializer,
) -> FencedCacheBackend:
    """The backend a :class:`~scalekit.cache.Cache` drives: ``memory://`` (on
    ``clock``), a Redis URL (``clock`` only if given: tests), ``tiered+<redis URL>``,
    or a backend object implementing the whole protocol (on ``clock`` if given)."""
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
        if isinstance(clock, Clock) and backend.clock is not clock:
            raise ConfigurationError(
                f"clock= was given with a backend object on another clock; the cache "
                f"reads its backend's time: build {backend!r} with clock= instead"
            )
        return backend
    parts = urlsplit(backend)
    scheme = parts.scheme
    tiered = scheme.startswith("tiered+")
    if scheme.removeprefix("tiered+") in _REDIS_SCHEMES:
        from scalekit.cache._redis import RedisCacheBackend

        l2 = RedisCacheBackend(backend.removeprefix("tiered+"), serializer=serializer, clock=clock)
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
    n = _memory_bound(parsed).get("max_keys", max_entries)
    return MemoryCacheBackend(max_entries=10_000 if n is None else n, clock=clock)


def plain_types(backend: object) -> tuple[type, ...] | None:
    """What a value stored without a type may be made of, to read back as itself
    from ``backend`` (JSON, msgpack); None: anything (objects kept, or pickled)."""
    ser = getattr(getattr(backend, "l2", backend), "serializer", None)
    if isinstance(ser, MsgpackSerializer):
        return MSGPACK_PLAIN
    return JSON_PLAIN if isinstance(ser, JsonSerializer) else None


def share_decode_counter(backend: object, counter: Counter) -> None:
    """A remote backend counts the entries it cannot decode on ``counter`` (a
    cache's), which takes over what it counted so far."""
    previous = getattr(backend, "decode_counter", None)
    if isinstance(previous, Counter):
        if previous.value:
            counter.add(previous.value)
        cast(Any, backend).decode_counter = counter

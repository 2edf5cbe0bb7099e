"""Backends chosen by URL: ``backend_from_url("redis://…")`` or ``"memory://"``.

A backend holds connection settings and clients; each primitive builds the small
store it needs on top of it. Optional drivers are imported only here, when a
backend is built, and a missing one raises :class:`~scalekit.errors.MissingDependency`
naming the extra to install.

=====================================  ====================================
URL                                    backend
=====================================  ====================================
``memory://`` (``?max_keys=N``)        :class:`MemoryBackend`, this process
``redis://[:pw@]host:port/db``         :class:`RedisBackend`
``rediss://…``                         Redis over TLS
``unix:///path/redis.sock?db=0``       Redis over a unix socket
``redis+cluster://host:port``          Redis Cluster (``rediss+cluster`` for TLS)
=====================================  ====================================

Redis URLs accept ``socket_timeout`` and ``connect_timeout`` (seconds) in the
query string; both default to 0.25 s.
"""

from __future__ import annotations

from typing import Any, TypeAlias
from urllib.parse import parse_qsl, urlsplit

from scalekit.backends.memory import MemoryBackend
from scalekit.backends.redis import RedisBackend  # imports redis-py only when built
from scalekit.errors import ConfigurationError

__all__ = [
    "Backend",
    "BackendLike",
    "MemoryBackend",
    "RedisBackend",
    "backend_from_url",
    "as_backend",
]

Backend: TypeAlias = MemoryBackend | RedisBackend
BackendLike: TypeAlias = str | MemoryBackend | RedisBackend


def backend_from_url(url: str, **options: Any) -> Backend:
    """Build a backend from a URL; ``options`` go to the backend's constructor."""
    if not isinstance(url, str):
        raise ConfigurationError(f"a backend URL must be a string, got {url!r}")
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme == "memory":
        query = dict(parse_qsl(parts.query))
        unknown = set(query) - {"max_keys"}
        if unknown:
            raise ConfigurationError(
                f"unknown option(s) {sorted(unknown)} in {url!r}; memory:// accepts max_keys"
            )
        if "max_keys" in query:
            try:
                options.setdefault("max_keys", int(query["max_keys"]))
            except ValueError:
                raise ConfigurationError(
                    f"max_keys must be an integer, got {query['max_keys']!r} in {url!r}"
                ) from None
        return MemoryBackend(**options)
    if scheme in ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster"):
        return RedisBackend.from_url(url, **options)
    raise ConfigurationError(
        f"unsupported backend URL {scheme + '://' if scheme else url!r}; expected memory://, "
        "redis://, rediss://, unix:// or redis+cluster://"
    )


def as_backend(backend: BackendLike) -> Backend:
    """Accept a URL or a backend object."""
    if isinstance(backend, str):
        return backend_from_url(backend)
    if isinstance(backend, MemoryBackend | RedisBackend):
        return backend
    raise ConfigurationError(
        f"backend must be a URL (memory://, redis://, …) or a backend object, got {backend!r}"
    )

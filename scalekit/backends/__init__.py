"""Backends chosen by URL: ``backend_from_url("redis://…")`` or ``"memory://"``.

A backend holds connection settings and clients; each primitive builds the small
store it needs on top of it. Optional drivers are imported only here, when a
backend is built, and a missing one raises :class:`~scalekit.errors.MissingDependency`
naming the extra to install.

One URL grammar for every primitive: a registry of schemes, each declaring the
options its query string may carry. An unknown or misspelt option is refused with a
:class:`~scalekit.errors.ConfigurationError` naming the allowed ones
(:func:`parse_backend_url` does the parsing for anyone who needs it).

=====================================  ====================================
URL                                    backend
=====================================  ====================================
``memory://`` (``?max_keys=N``)        :class:`MemoryBackend`, this process
``redis://[:pw@]host:port/db``         :class:`RedisBackend`
``rediss://…``                         Redis over TLS
``unix:///path/redis.sock?db=0``       Redis over a unix socket
``redis+cluster://host:port``          Redis Cluster (``rediss+cluster`` for TLS)
=====================================  ====================================

Redis URLs accept ``socket_timeout``, ``connect_timeout``, ``pool_timeout`` and
``max_idle`` (seconds), ``max_connections`` and ``autopipeline`` (``true`` /
``false``), plus redis-py's ``db``, ``client_name``, ``health_check_interval``,
``socket_keepalive``, ``protocol`` and ``ssl_*`` options.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias
from urllib.parse import parse_qsl, urlsplit

from scalekit._urls import redact as _redact
from scalekit.backends._memory import MemoryBackend
from scalekit.backends._redis import URL_PARSERS as _REDIS_URL_PARSERS
from scalekit.backends._redis import RedisBackend, RedisStats  # redis-py only when built
from scalekit.errors import ConfigurationError

__all__ = [
    "Backend",
    "BackendLike",
    "MemoryBackend",
    "RedisBackend",
    "RedisStats",
    "as_backend",
    "backend_from_url",
    "parse_backend_url",
]

Backend: TypeAlias = MemoryBackend | RedisBackend
BackendLike: TypeAlias = str | MemoryBackend | RedisBackend


@dataclass(frozen=True, slots=True)
class _Scheme:
    """One URL scheme: how to build its backend and the options its query may carry."""

    build: Callable[[str, dict[str, Any], dict[str, Any]], Backend]
    options: Mapping[str, Callable[[str], Any]]


def _build_memory(url: str, parsed: dict[str, Any], options: dict[str, Any]) -> Backend:
    return MemoryBackend(**{**_memory_bound(parsed), **options})


def _memory_bound(parsed: dict[str, Any]) -> dict[str, Any]:
    """``memory://`` options with the bound under one name: ``max_entries`` (the
    cache's word) is ``max_keys``; giving both is refused."""
    if "max_entries" not in parsed:
        return parsed
    if "max_keys" in parsed:
        raise ConfigurationError(
            "memory:// takes one bound: max_keys or max_entries (the same), not both"
        )
    out = dict(parsed)
    out["max_keys"] = out.pop("max_entries")
    return out


def _build_redis(url: str, parsed: dict[str, Any], options: dict[str, Any]) -> Backend:
    return RedisBackend.from_url(url, **options)


_MEMORY = _Scheme(_build_memory, {"max_keys": int, "max_entries": int})
_REDIS = _Scheme(_build_redis, _REDIS_URL_PARSERS)

#: the scheme registry (limits' ``StorageRegistry`` is the model): scheme -> _Scheme
_SCHEMES: dict[str, _Scheme] = {
    "memory": _MEMORY,
    "redis": _REDIS,
    "rediss": _REDIS,
    "unix": _REDIS,
    "redis+cluster": _REDIS,
    "rediss+cluster": _REDIS,
}


_KINDS: dict[Callable[[str], Any], str] = {
    int: "an integer",
    float: "a number (seconds)",
    _REDIS_URL_PARSERS["autopipeline"]: "true or false",
}


def parse_backend_url(url: str) -> tuple[str, dict[str, Any]]:
    """``(scheme, options)`` of a backend URL, each option parsed to its type.

    ``parse_backend_url("memory://?max_keys=5")`` -> ``("memory", {"max_keys": 5})``.
    Raises :class:`~scalekit.errors.ConfigurationError` for an unknown scheme, an
    option the scheme does not declare (the message lists the allowed ones), a
    repeated option, or a value of the wrong type.
    """
    if not isinstance(url, str):
        raise ConfigurationError(f"a backend URL must be a string, got {url!r}")
    parts = urlsplit(url)
    scheme = parts.scheme
    spec = _SCHEMES.get(scheme)
    if spec is None:
        expected = ", ".join(f"{s}://" for s in _SCHEMES)
        raise ConfigurationError(
            f"unsupported backend URL {scheme + '://' if scheme else _redact(url)!r}; "
            f"expected one of {expected}"
        )
    options: dict[str, Any] = {}
    for name, raw in parse_qsl(parts.query, keep_blank_values=True):
        parser = spec.options.get(name)
        if parser is None:
            allowed = ", ".join(sorted(spec.options)) or "none"
            raise ConfigurationError(
                f"unknown option {name!r} in a {scheme}:// URL; allowed: {allowed}"
            )
        if name in options:
            raise ConfigurationError(f"option {name!r} appears twice in a {scheme}:// URL")
        try:
            options[name] = parser(raw)
        except ValueError:
            kind = _KINDS.get(parser, "valid")
            raise ConfigurationError(
                f"{name} must be {kind} in a {scheme}:// URL, got {raw!r}"
            ) from None
    return scheme, options


def backend_from_url(url: str, **options: Any) -> Backend:
    """Build a backend from a URL; keyword ``options`` win over the URL's."""
    scheme, parsed = parse_backend_url(url)
    return _SCHEMES[scheme].build(url, parsed, options)


def as_backend(backend: BackendLike | None, *, fallback: str | None = None) -> Backend:
    """Accept a URL or a backend object; ``None``: ``SCALEKIT_REDIS_URL`` (see
    :mod:`scalekit.config`), else ``fallback``, else a ConfigurationError -- a limiter
    silently in this process' memory on a fleet would multiply its limit."""
    if backend is None:
        from scalekit.config import default_backend_url

        backend = default_backend_url(fallback=fallback)
    if isinstance(backend, str):
        return backend_from_url(backend)
    if isinstance(backend, MemoryBackend | RedisBackend):
        return backend
    raise ConfigurationError(
        f"backend must be a URL (memory://, redis://, …) or a backend object, got {backend!r}"
    )

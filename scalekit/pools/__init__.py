"""Pooled clients for PostgreSQL (asyncpg) and Redis (redis-py, sync and asyncio).

- :class:`PoolSettings` from keywords, a URL (``?max_size=10&pooler=...``) or the
  environment (``PoolSettings.from_env("postgres")`` reads ``SCALEKIT_POSTGRES_*``).
- :class:`PgPool` / :func:`create_pg_pool`: asyncpg pool with finite acquire waits
  (:class:`~scalekit.errors.PoolExhausted`), pooler modes, lifetime with jitter,
  pre-ping, health check, start-up capacity check and metrics.
- :func:`redis_client` / :func:`async_redis_client`: redis-py clients on bounded pools
  with the same waits, lifetimes and metrics.
- :class:`PoolRegistry` (and :data:`default_registry` behind :func:`get_postgres`,
  :func:`get_redis`, :func:`get_async_redis`, :func:`close_pools`): one pool per
  (settings, process, event loop), lazily created, safe after fork, closed by
  ``async with`` or an ASGI ``lifespan``.
"""

from __future__ import annotations

from typing import Any

from scalekit._deprecated import moved_name
from scalekit.pools import _policy
from scalekit.pools._metrics import PoolStats
from scalekit.pools._policy import CapacityReport, PoolerMode
from scalekit.pools._postgres import HealthReport, PgPool, create_pg_pool
from scalekit.pools._redis import (
    async_redis_client,
    async_redis_health_check,
    pool_stats,
    redis_client,
    redis_health_check,
)
from scalekit.pools._registry import PoolRegistry, default_registry
from scalekit.pools._settings import PoolSettings

__all__ = [
    "CapacityReport",
    "HealthReport",
    "PgPool",
    "PoolRegistry",
    "PoolSettings",
    "PoolStats",
    "PoolerMode",
    "async_redis_client",
    "async_redis_health_check",
    "close_pools",
    "create_pg_pool",
    "default_registry",
    "get_async_redis",
    "get_postgres",
    "get_redis",
    "pool_stats",
    "redis_client",
    "redis_health_check",
]


async def get_postgres(target: PoolSettings | str, **overrides: Any) -> PgPool:
    """``default_registry.postgres(...)``: this process's and loop's pool for ``target``."""
    return await default_registry.postgres(target, **overrides)


def get_redis(target: PoolSettings | str, **overrides: Any) -> Any:
    """``default_registry.redis(...)``: this process's ``redis.Redis`` for ``target``."""
    return default_registry.redis(target, **overrides)


def get_async_redis(target: PoolSettings | str, **overrides: Any) -> Any:
    """``default_registry.async_redis(...)``: this process's and loop's asyncio client."""
    return default_registry.async_redis(target, **overrides)


async def close_pools() -> None:
    """``default_registry.aclose()``: close this loop's pools and the sync clients."""
    await default_registry.aclose()


_REMOVED = {"POOLER_MODES": (lambda: _policy.POOLER_MODES, "use typing.get_args(PoolerMode)")}


def __getattr__(name: str) -> object:
    return moved_name(__name__, name, _REMOVED)

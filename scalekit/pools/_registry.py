"""One pool per (settings, process, event loop), created lazily, closed together.

``await registry.postgres(url)`` returns the :class:`PgPool` for that URL in the
running event loop of this process, creating (and opening) it the first time; tasks
racing for the first use share one creation. ``registry.redis(url)`` (sync, per
process) and ``registry.async_redis(url)`` (per process and loop) do the same for
redis-py clients.

After ``fork()`` a child starts with an empty registry: the parent's pools hold
the parent's sockets (and loops), so they are forgotten, never used or closed, in
the child (``os.register_at_fork`` and a pid check on every lookup).

``async with registry:`` or ``lifespan=registry.lifespan`` (Starlette / FastAPI)
closes, on exit, every pool of this process that belongs to the running loop, and
the sync Redis clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import weakref
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Self

from scalekit.pools._postgres import FORK_ORPHANS, PgPool
from scalekit.pools._redis import async_redis_client, redis_client
from scalekit.pools._settings import PoolSettings

__all__ = ["PoolRegistry", "default_registry"]

_REGISTRIES: weakref.WeakSet[PoolRegistry] = weakref.WeakSet()


def _settings(target: PoolSettings | str, overrides: dict[str, Any]) -> PoolSettings:
    if isinstance(target, str):
        return PoolSettings.from_url(target, **overrides)
    return target.with_options(**overrides) if overrides else target


class PoolRegistry:
    """A registry of pools and clients keyed by (settings, pid, event loop).

    ``options`` given to the constructor go to every :class:`PgPool` it creates
    (e.g. ``clock=`` in tests, ``init=`` to register type codecs).
    """

    def __init__(self, **pg_options: Any) -> None:
        self._pg_options = pg_options
        self._lock = threading.Lock()
        self._forget()
        _REGISTRIES.add(self)

    def _forget(self) -> None:
        if hasattr(self, "_pg"):  # forked: keep the parent's objects, never collect them
            FORK_ORPHANS.append((self._pg, self._aredis, self._redis))
        self._pid = os.getpid()
        self._pg: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[PoolSettings, asyncio.Future[PgPool]]
        ] = weakref.WeakKeyDictionary()
        self._aredis: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[PoolSettings, Any]
        ] = weakref.WeakKeyDictionary()
        self._redis: dict[PoolSettings, Any] = {}

    def _check_pid(self) -> None:
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._forget()

    # -- lookups -------------------------------------------------------------
    async def postgres(self, target: PoolSettings | str, **overrides: Any) -> PgPool:
        """The open :class:`PgPool` for ``target`` in this process and event loop."""
        self._check_pid()
        settings = _settings(target, overrides)
        loop = asyncio.get_running_loop()
        pools = self._pg.setdefault(loop, {})
        while True:
            future = pools.get(settings)
            if future is None:
                return await self._create(pools, settings, loop)
            try:
                return await asyncio.shield(future)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if future.cancelled() and task is not None and not task.cancelling():
                    continue  # the creating task was cancelled, not us: create it here
                raise

    async def _create(
        self,
        pools: dict[PoolSettings, asyncio.Future[PgPool]],
        settings: PoolSettings,
        loop: asyncio.AbstractEventLoop,
    ) -> PgPool:
        future: asyncio.Future[PgPool] = loop.create_future()
        pools[settings] = future
        try:
            pool = await PgPool(settings, **self._pg_options).open()
        except BaseException as exc:
            del pools[settings]  # a failed creation is not remembered
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
                future.exception()  # mark retrieved: the error is raised below
            raise
        future.set_result(pool)
        return pool

    def redis(self, target: PoolSettings | str, **overrides: Any) -> Any:
        """The ``redis.Redis`` client for ``target`` in this process (thread-safe)."""
        self._check_pid()
        settings = _settings(target, overrides)
        client = self._redis.get(settings)
        if client is None:
            with self._lock:
                client = self._redis.get(settings)
                if client is None:
                    client = self._redis[settings] = redis_client(settings)
        return client

    def async_redis(self, target: PoolSettings | str, **overrides: Any) -> Any:
        """The ``redis.asyncio.Redis`` client for ``target`` in this process and loop."""
        self._check_pid()
        settings = _settings(target, overrides)
        clients = self._aredis.setdefault(asyncio.get_running_loop(), {})
        client = clients.get(settings)
        if client is None:
            client = clients[settings] = async_redis_client(settings)
        return client

    def stats(self) -> list[Any]:
        """:class:`~scalekit.pools.PoolStats` of every pool of this process."""
        self._check_pid()
        out = []
        for futures in list(self._pg.values()):
            for future in futures.values():
                if future.done() and not future.cancelled() and future.exception() is None:
                    out.append(future.result().stats())
        for clients in list(self._aredis.values()):
            out.extend(client.connection_pool.stats() for client in clients.values())
        out.extend(client.connection_pool.stats() for client in self._redis.values())
        return out

    # -- closing -------------------------------------------------------------
    async def aclose(self) -> None:
        """Close the pools of the running loop and the sync Redis clients."""
        self._check_pid()
        loop = asyncio.get_running_loop()
        futures = self._pg.pop(loop, {})
        clients = self._aredis.pop(loop, {})
        with self._lock:
            sync_clients, self._redis = self._redis, {}
        for future in futures.values():
            if future.done() and not future.cancelled() and future.exception() is None:
                await future.result().close()
        for client in clients.values():
            await client.aclose()
        for client in sync_clients.values():
            client.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """An ASGI lifespan: ``Starlette(lifespan=registry.lifespan)``; closes on shutdown."""
        try:
            yield
        finally:
            await self.aclose()


def _after_fork_in_child() -> None:
    for registry in list(_REGISTRIES):
        registry._forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

default_registry = PoolRegistry()
"""The process-wide registry behind :func:`scalekit.pools.get_postgres` and friends."""

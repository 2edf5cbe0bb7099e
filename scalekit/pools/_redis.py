"""redis-py clients (sync and asyncio) on bounded, blocking, measured pools.

``redis_client(url)`` / ``async_redis_client(url)`` return plain ``redis.Redis`` /
``redis.asyncio.Redis`` objects whose ``connection_pool`` is a subclass of
redis-py's ``BlockingConnectionPool``. It adds:

- :class:`~scalekit.errors.PoolExhausted` (size, waiters) instead of redis-py's
  ``ConnectionError("No connection available.")`` after ``acquire_timeout``;
- a maximum connection lifetime with jitter (an old connection is reconnected when
  it is taken from the pool);
- the metrics of :class:`~scalekit.pools.PoolStats`, under the same names as for
  PostgreSQL: ``client.connection_pool.stats()`` or :func:`pool_stats`.

``pre_ping_after`` maps to redis-py's ``health_check_interval`` (a PING before a
command on a connection idle that long). ``max_idle``: a connection that has sat in
the pool that long is closed (checked when a connection is taken or given back, so an
idle process keeps its sockets until its next command).
``min_size`` does not apply:
redis-py opens connections on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import random
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from scalekit._clock import Clock, as_clock
from scalekit.errors import ConfigurationError, MissingDependency, PoolExhausted
from scalekit.pools._metrics import PoolCounters, PoolStats
from scalekit.pools._policy import expires_at
from scalekit.pools._postgres import HealthReport
from scalekit.pools._settings import PoolSettings

__all__ = [
    "async_redis_client",
    "async_redis_health_check",
    "pool_stats",
    "redis_client",
    "redis_health_check",
]

_NO_CONNECTION = "No connection available."
_CLASSES: dict[str, Any] = {}


def _import_redis() -> Any:
    try:
        import redis
        import redis.asyncio
    except ImportError as exc:
        raise MissingDependency("Redis pools", "redis", "redis") from exc
    return redis


class _Lifetimes:
    """Shared bookkeeping of both pool flavours (settings, clock, counters, expiry)."""

    def _sk_setup(
        self, settings: PoolSettings, clock: Clock | Callable[[], float] | None, rng: Any
    ) -> None:
        self.sk_settings = settings
        self.sk_counters = self._sk_new_counters()
        self._sk_now = as_clock(clock).now
        self._sk_rng = rng if rng is not None else random.Random()
        self._sk_lifetime = settings.seconds("max_lifetime")
        self._sk_max_idle = settings.seconds("max_idle")
        self._sk_next_sweep = 0.0
        self._sk_pid = os.getpid()

    def _sk_idle_expired(self, idle: list[Any], now: float) -> list[Any]:
        """The connections of ``idle`` (free, in the pool) unused for ``max_idle``.

        Runs at most four times per ``max_idle``; a connection is stamped when given back.
        """
        max_idle = self._sk_max_idle
        if max_idle is None or now < self._sk_next_sweep:
            return []
        self._sk_next_sweep = now + max_idle / 4
        limit = now - max_idle
        return [
            c for c in idle if getattr(c, "_sk_released", now) <= limit and self._sk_connected(c)
        ]

    @staticmethod
    def _sk_connected(connection: Any) -> bool:
        return getattr(connection, "_sock", None) is not None or (
            getattr(connection, "_writer", None) is not None
        )

    def _sk_expired(self, connection: Any, now: float) -> bool:
        """Stamp a new connection; True (and restamp) when an old one must be replaced."""
        expires = getattr(connection, "_sk_expires", None)
        fresh = expires_at(now, self._sk_lifetime, self.sk_settings.lifetime_jitter, self._sk_rng)
        if expires is None:
            connection._sk_expires = fresh
            return False
        if now >= expires:
            connection._sk_expires = fresh
            self.sk_counters.recycled.inc()
            return True
        return False

    def _sk_new_counters(self) -> PoolCounters:
        ref = weakref.ref(self)

        def size() -> int:
            pool: Any = ref()
            return int(pool.stats().size) if pool is not None else 0

        settings = self.sk_settings
        return PoolCounters().attach(
            name=settings.label, kind="redis", max_size=settings.max_size, size=size
        )

    def _sk_exhausted(self) -> PoolExhausted:
        c = self.sk_counters
        c.exhausted(
            self.sk_settings.label,
            "redis",
            self.sk_settings.max_size,
            self.sk_settings.acquire_seconds,
        )
        return PoolExhausted(
            self.sk_settings.label,
            size=self.sk_settings.max_size,
            waiters=c.waiters,
            timeout=self.sk_settings.acquire_seconds,
        )

    def _sk_check_pid(self) -> None:
        pid = os.getpid()
        if pid != self._sk_pid:  # forked: the parent's counts mean nothing here
            self._sk_pid = pid
            self.sk_counters = self._sk_new_counters()


def _sync_pool_class() -> Any:
    if "sync" in _CLASSES:
        return _CLASSES["sync"]
    redis = _import_redis()
    no_connection = redis.exceptions.ConnectionError

    base: Any = redis.BlockingConnectionPool

    class ScalekitBlockingPool(_Lifetimes, base):  # type: ignore[misc]
        def __init__(
            self,
            *,
            sk_settings: PoolSettings,
            sk_clock: Clock | Callable[[], float] | None = None,
            sk_rng: Any = None,
            **kwargs: Any,
        ) -> None:
            self._sk_setup(sk_settings, sk_clock, sk_rng)
            self._sk_lock = threading.Lock()
            super().__init__(**kwargs)

        def get_connection(self, *args: Any, **kwargs: Any) -> Any:
            self._sk_check_pid()
            c = self.sk_counters
            now = self._sk_now
            start = now()
            with self._sk_lock:
                c.waiters += 1
            try:
                connection = super().get_connection(*args, **kwargs)
            except no_connection as exc:
                if str(exc) != _NO_CONNECTION:
                    raise
                with self._sk_lock:
                    c.waited(now() - start)
                    error = self._sk_exhausted()
                raise error from None
            finally:
                with self._sk_lock:
                    c.waiters -= 1
            t = now()
            try:
                if self._sk_expired(connection, t):
                    connection.disconnect()
                    connection.connect()
            except BaseException:
                super().release(connection)
                raise
            with self._sk_lock:
                c.waited(t - start)
                c.acquired.inc()
                c.in_use += 1
            return connection

        def release(self, connection: Any) -> None:
            with self._sk_lock:
                self.sk_counters.in_use -= 1
            now = self._sk_now()
            connection._sk_released = now
            super().release(connection)
            if self._sk_max_idle is not None and now >= self._sk_next_sweep:
                self._sk_sweep(now)

        def _sk_sweep(self, now: float) -> None:
            """Close the free connections idle for ``max_idle``: they are taken out of
            the queue while closed (another thread finds it empty for that instant and
            waits), then put back unconnected, to reconnect when next used."""
            taken: list[Any] = []
            with self._sk_lock:
                try:
                    while True:
                        taken.append(self.pool.get_nowait())
                except queue.Empty:
                    pass
                try:
                    free = [c for c in taken if c is not None]
                    for stale in self._sk_idle_expired(free, now):
                        stale.disconnect()
                finally:
                    for c in reversed(taken):  # the LIFO order as it was
                        self.pool.put_nowait(c)

        def stats(self) -> PoolStats:
            size = sum(1 for c in list(self._connections) if self._sk_connected(c))
            return self.sk_counters.snapshot(
                name=self.sk_settings.label,
                kind="redis",
                max_size=self.sk_settings.max_size,
                size=size,
            )

    _CLASSES["sync"] = ScalekitBlockingPool
    return ScalekitBlockingPool


def _async_pool_class() -> Any:
    if "async" in _CLASSES:
        return _CLASSES["async"]
    redis = _import_redis()

    base: Any = redis.asyncio.BlockingConnectionPool

    class ScalekitAsyncBlockingPool(_Lifetimes, base):  # type: ignore[misc]
        def __init__(
            self,
            *,
            sk_settings: PoolSettings,
            sk_clock: Clock | Callable[[], float] | None = None,
            sk_rng: Any = None,
            **kwargs: Any,
        ) -> None:
            self._sk_setup(sk_settings, sk_clock, sk_rng)
            self._sk_queue: deque[asyncio.Future[Any]] = deque()
            super().__init__(**kwargs)

        async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
            """A connection, waiting in FIFO order (no barging) up to ``acquire_timeout``.

            redis-py's own blocking pool wakes waiters through a condition whose lock a
            task releasing and re-acquiring in a loop wins again and again: under a
            steady load the oldest waiters starve until their timeout. Here a released
            connection goes straight to the oldest waiter.
            """
            self._sk_check_pid()
            c = self.sk_counters
            now = self._sk_now
            start = now()
            if self._sk_queue or not self.sk_has_room():
                connection = await self._sk_wait(start)
            else:
                connection = self._sk_checkout()
            t = now()
            try:
                await self.ensure_connection(connection)
                if self._sk_expired(connection, t):
                    await connection.disconnect()
                    await connection.connect()
            except BaseException:
                self._sk_hand_over(connection, now())
                raise
            c.waited(t - start)
            c.acquired.inc()
            c.in_use += 1
            return connection

        async def _sk_wait(self, start: float) -> Any:
            c = self.sk_counters
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._sk_queue.append(fut)
            c.waiters += 1
            try:
                async with asyncio.timeout(self.timeout):
                    return await fut
            except TimeoutError:
                if fut.done() and not fut.cancelled():
                    return fut.result()  # handed over as the timeout fired
                c.waited(self._sk_now() - start)
                raise self._sk_exhausted() from None
            except BaseException:
                if fut.done() and not fut.cancelled():
                    self._sk_hand_over(fut.result(), self._sk_now())  # to the next one
                raise
            finally:
                c.waiters -= 1
                if not fut.done():
                    fut.cancel()
                with contextlib.suppress(ValueError):
                    self._sk_queue.remove(fut)

        def _sk_checkout(self) -> Any:
            try:
                connection = self._available_connections.pop()
            except IndexError:
                connection = self.make_connection()
            self._in_use_connections.add(connection)
            return connection

        def _sk_hand_over(self, connection: Any, now: float) -> None:
            """Give ``connection`` to the oldest waiter, else back to the pool."""
            connection._sk_released = now
            queue = self._sk_queue
            while queue:
                fut = queue.popleft()
                if not fut.done():
                    fut.set_result(connection)  # stays in use, now the waiter's
                    return
            self._in_use_connections.discard(connection)
            self._available_connections.append(connection)

        async def release(self, connection: Any) -> None:
            self.sk_counters.in_use -= 1
            now = self._sk_now()
            self._sk_hand_over(connection, now)
            stale = self._sk_idle_expired(self._available_connections, now)
            for c in stale:  # out of reach of other tasks while they are closed
                self._available_connections.remove(c)
            for c in stale:
                try:
                    await c.disconnect(nowait=True)
                finally:
                    self._available_connections.insert(0, c)  # reconnects when next used

        def sk_has_room(self) -> bool:
            """True if a connection can be had now without waiting."""
            return bool(self._available_connections) or (
                len(self._in_use_connections) < self.max_connections
            )

        def sk_open_connections(self) -> int:
            """Connections of this pool with an open socket."""
            return sum(
                1
                for c in (*self._available_connections, *self._in_use_connections)
                if self._sk_connected(c)
            )

        def stats(self) -> PoolStats:
            size = self.sk_open_connections()
            return self.sk_counters.snapshot(
                name=self.sk_settings.label,
                kind="redis",
                max_size=self.sk_settings.max_size,
                size=size,
            )

    _CLASSES["async"] = ScalekitAsyncBlockingPool
    return ScalekitAsyncBlockingPool


def _redis_settings(settings: PoolSettings | str) -> PoolSettings:
    if isinstance(settings, str):
        settings = PoolSettings.from_url(settings)
    if not isinstance(settings, PoolSettings):
        raise ConfigurationError(f"settings must be PoolSettings or a URL, got {settings!r}")
    if settings.kind != "redis":
        raise ConfigurationError(
            f"a Redis client needs a redis://, rediss:// or unix:// URL, got {settings.label!r}"
        )
    return settings


def _pool_kwargs(settings: PoolSettings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "max_connections": settings.max_size,
        "timeout": settings.acquire_seconds,
        "socket_connect_timeout": settings.connect_seconds,
        "socket_timeout": settings.seconds("command_timeout"),
        "sk_settings": settings,
    }
    ping = settings.seconds("pre_ping_after")
    if ping is not None:
        kwargs["health_check_interval"] = ping
    return kwargs


def redis_client(
    settings: PoolSettings | str,
    *,
    clock: Clock | Callable[[], float] | None = None,
    rng: random.Random | None = None,
    **options: Any,
) -> Any:
    """A ``redis.Redis`` on a bounded pool built from ``settings`` (or a URL).

    ``options`` go to redis-py's connection pool (e.g. ``decode_responses=True``).
    """
    settings = _redis_settings(settings)
    _import_redis()
    import redis

    kwargs = _pool_kwargs(settings) | {"sk_clock": clock, "sk_rng": rng} | options
    pool = _sync_pool_class().from_url(settings.url, **kwargs)
    return redis.Redis.from_pool(pool)  # close() closes the pool too


def async_redis_client(
    settings: PoolSettings | str,
    *,
    clock: Clock | Callable[[], float] | None = None,
    rng: random.Random | None = None,
    **options: Any,
) -> Any:
    """A ``redis.asyncio.Redis`` on a bounded pool built from ``settings`` (or a URL).

    Like every asyncio client it belongs to the event loop that first uses it.
    """
    settings = _redis_settings(settings)
    redis = _import_redis()
    kwargs = _pool_kwargs(settings) | {"sk_clock": clock, "sk_rng": rng} | options
    pool = _async_pool_class().from_url(settings.url, **kwargs)
    return redis.asyncio.Redis.from_pool(pool)  # aclose() closes the pool too


def pool_stats(client: Any) -> PoolStats:
    """:class:`PoolStats` of a client made by :func:`redis_client` / :func:`async_redis_client`
    or of a :class:`~scalekit.pools.PgPool`."""
    stats = getattr(client, "stats", None) or getattr(client.connection_pool, "stats", None)
    if stats is None:
        raise ConfigurationError(f"{client!r} was not made by scalekit.pools; it has no stats()")
    result: PoolStats = stats()
    return result


def _report(client: Any, ok: bool, latency: float, error: str | None) -> HealthReport:
    stats = pool_stats(client)
    return HealthReport(name=stats.name, ok=ok, latency=latency, error=error, stats=stats)


def redis_health_check(client: Any, *, clock: Clock | None = None) -> HealthReport:
    """PING through the pool; never raises (the error is in the report)."""
    now = as_clock(clock).now
    start = now()
    try:
        client.ping()
    except Exception as exc:
        return _report(client, False, now() - start, repr(exc))
    return _report(client, True, now() - start, None)


async def async_redis_health_check(client: Any, *, clock: Clock | None = None) -> HealthReport:
    """PING through the pool of an asyncio client; never raises."""
    now = as_clock(clock).now
    start = now()
    try:
        await client.ping()
    except Exception as exc:
        return _report(client, False, now() - start, repr(exc))
    return _report(client, True, now() - start, None)

"""asyncpg pools with finite waits, pooler awareness, lifetimes, pre-ping and metrics.

:class:`PgPool` wraps an ``asyncpg.Pool`` (created lazily on first use, or by
``await pool.open()``). What it adds on the hot path is a few attribute reads:

- ``acquire()`` waits at most ``acquire_timeout`` and then raises
  :class:`~scalekit.errors.PoolExhausted` with the pool size and the number of
  waiters; the wait is counted in the metrics;
- a connection older than its lifetime (``max_lifetime`` minus jitter, stamped
  when asyncpg opens it) is closed at acquire and replaced; one idle for
  ``pre_ping_after`` is pinged first and replaced if the ping fails;
- ``pooler=`` sets asyncpg's statement cache for the pooler in front of the server;
- ``fetch``/``fetchrow``/``fetchval``/``execute`` run one statement on a pooled
  connection and re-run it once if a cached statement was invalidated (DDL)
  while no transaction was open.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import warnings
import weakref
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any, Literal, Self

from scalekit import _validate as check
from scalekit._clock import Clock, as_clock
from scalekit.errors import BackendError, ConfigurationError, MissingDependency, PoolExhausted
from scalekit.pools._metrics import PoolCounters, PoolStats
from scalekit.pools._policy import CapacityReport, capacity_report, expires_at, pooler_options
from scalekit.pools._settings import PoolSettings

__all__ = ["HealthReport", "PgPool", "create_pg_pool"]

log = logging.getLogger("scalekit.pools")

_CONNECTION_CLASS: Any = None
_LIVE: weakref.WeakSet[PgPool] = weakref.WeakSet()
# The parent's pools, kept referenced forever in a forked child: collecting them would
# run asyncpg's cleanup (aborting transports, unregistering sockets from the epoll
# instance the child shares with the parent), which would disturb the parent.
FORK_ORPHANS: list[object] = []


def _import_asyncpg() -> Any:
    try:
        import asyncpg
    except ImportError as exc:
        raise MissingDependency("PostgreSQL pools", "postgres", "asyncpg") from exc
    return asyncpg


def _connection_class() -> Any:
    """An ``asyncpg.Connection`` subclass carrying its expiry and last-use times."""
    global _CONNECTION_CLASS
    if _CONNECTION_CLASS is None:
        asyncpg = _import_asyncpg()

        base: Any = asyncpg.Connection

        class PooledConnection(base):  # type: ignore[misc]
            __slots__ = ("_sk_expires", "_sk_last_used")

            def _sk_stamp(self, expires: float, now: float) -> None:
                self._sk_expires = expires
                self._sk_last_used = now

            def _sk_touch(self, now: float) -> None:
                self._sk_last_used = now

        _CONNECTION_CLASS = PooledConnection
    return _CONNECTION_CLASS


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthReport:
    """Result of ``health_check()``: ``ok``, the round-trip ``latency`` in seconds,
    the ``error`` (``repr`` of the exception) if not ok, and a :class:`PoolStats`."""

    name: str
    ok: bool
    latency: float
    error: str | None
    stats: PoolStats


class _Acquire:
    """``async with pool.acquire() as con`` or ``con = await pool.acquire()``."""

    __slots__ = ("_con", "_pool", "_timeout")

    def __init__(self, pool: PgPool, timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._con: Any = None

    async def __aenter__(self) -> Any:
        self._con = await self._pool._acquire(self._timeout)
        return self._con

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        con, self._con = self._con, None
        await self._pool.release(con)

    def __await__(self) -> Generator[Any, None, Any]:
        return self._pool._acquire(self._timeout).__await__()


class PgPool:
    """A pool of asyncpg connections to one PostgreSQL (directly or via a pooler).

    ``settings`` is a :class:`PoolSettings` or a ``postgresql://`` URL (pool options
    in its query string). ``init`` / ``setup`` are asyncpg's hooks (called with a new
    connection / at every acquire); other keywords go to ``asyncpg.create_pool``
    and win over what the settings derive. ``clock`` and ``rng`` drive lifetimes,
    pings and the measured waits (tests pass a FakeClock).

    The pool belongs to the event loop that opened it. Use one per loop and
    process; :class:`~scalekit.pools.PoolRegistry` keeps that bookkeeping. In a
    process forked after it was opened, the parent's connections are dropped
    (never used or closed there) and the next acquire opens new ones.
    """

    def __init__(
        self,
        settings: PoolSettings | str,
        *,
        clock: Clock | Callable[[], float] | None = None,
        rng: random.Random | None = None,
        init: Callable[[Any], Awaitable[None]] | None = None,
        setup: Callable[[Any], Awaitable[None]] | None = None,
        **pool_options: Any,
    ) -> None:
        if isinstance(settings, str):
            settings = PoolSettings.from_url(settings)
        if not isinstance(settings, PoolSettings):
            raise ConfigurationError(f"settings must be PoolSettings or a URL, got {settings!r}")
        if settings.kind != "postgres":
            raise ConfigurationError(
                f"PgPool needs a postgresql:// URL, got {settings.label!r}; "
                "use redis_client()/async_redis_client() for Redis"
            )
        if "connection_class" in pool_options:
            raise ConfigurationError(
                "PgPool brings its own asyncpg connection class (it stamps lifetimes on "
                "it); connection_class cannot be given"
            )
        self.settings = settings
        self.name = settings.label
        self._now = as_clock(clock).now
        self._rng = rng if rng is not None else random.Random()
        self._user_init = init
        self._user_setup = setup
        self._options = pool_options
        self._counters = self._new_counters()
        self._pool: Any = None
        self._opening: asyncio.Lock | None = None
        self._pid = os.getpid()
        self._closed = False
        self._lifetime = settings.seconds("max_lifetime")
        self._ping_after = settings.seconds("pre_ping_after")
        self._acquire_timeout = settings.acquire_seconds
        self._release_timeout = settings.connect_seconds
        self._max_size = settings.max_size
        # the connections handed out and not yet given back: release() of one that is
        # not here (released twice, or never acquired from this pool) is refused, so
        # ``in_use`` is exact and the fast path of acquire() can trust it
        self._leased: set[Any] = set()
        # connections given back whose reset has not finished: not in use any more,
        # but not yet free in asyncpg's queue either
        self._releasing = 0
        self._stale_errors: tuple[type[BaseException], ...] = ()
        self._connect_errors: tuple[type[BaseException], ...] = ()
        _LIVE.add(self)

    def _new_counters(self) -> PoolCounters:
        ref = weakref.ref(self)

        def size() -> int:
            pool = ref()
            raw = pool._pool if pool is not None else None
            return int(raw.get_size()) if raw is not None else 0

        return PoolCounters().attach(
            name=self.name, kind="postgres", max_size=self.settings.max_size, size=size
        )

    def _after_fork(self) -> None:
        """In a forked child: drop the parent's pool (its sockets and loop) unused and
        unclosed; the next acquire opens a pool of this process."""
        if self._pool is not None:
            FORK_ORPHANS.append(self._pool)
        self._pool = None
        self._opening = None
        self._counters = self._new_counters()
        self._leased = set()
        self._releasing = 0
        self._pid = os.getpid()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("open" if self._pool is not None else "not opened")
        return f"PgPool({self.name!r}, max_size={self.settings.max_size}, {state})"

    # -- lifecycle -------------------------------------------------------------
    def _create_kwargs(self) -> dict[str, Any]:
        s = self.settings
        kwargs: dict[str, Any] = {
            "min_size": s.min_size,
            "max_size": s.max_size,
            "max_inactive_connection_lifetime": s.seconds("max_idle") or 0.0,
            "timeout": s.connect_seconds,
            "command_timeout": s.seconds("command_timeout"),
            "connection_class": _connection_class(),
            "init": self._init,
        }
        if self._user_setup is not None:
            kwargs["setup"] = self._user_setup
        kwargs.update(pooler_options(s.pooler))
        if s.application_name is not None:
            kwargs["server_settings"] = {"application_name": s.application_name}
        kwargs.update(self._options)
        return kwargs

    async def _init(self, con: Any) -> None:
        now = self._now()
        con._sk_stamp(
            expires_at(now, self._lifetime, self.settings.lifetime_jitter, self._rng), now
        )
        if self._user_init is not None:
            await self._user_init(con)

    async def open(self) -> Self:
        """Create the asyncpg pool (``min_size`` connections); idempotent."""
        if self._pool is not None:
            return self
        if self._closed:
            raise ConfigurationError(f"pool {self.name!r} is closed; create a new one")
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._pool is not None:
                return self
            asyncpg = _import_asyncpg()
            self._stale_errors = (
                asyncpg.exceptions.InvalidCachedStatementError,
                asyncpg.exceptions.OutdatedSchemaCacheError,
            )
            self._connect_errors = (
                OSError,
                asyncpg.exceptions.PostgresConnectionError,
                asyncpg.exceptions.InterfaceError,
                asyncpg.exceptions.InvalidAuthorizationSpecificationError,
                asyncpg.exceptions.InvalidCatalogNameError,
            )
            try:
                pool = await asyncpg.create_pool(self.settings.url, **self._create_kwargs())
            except (TimeoutError, *self._connect_errors) as exc:
                raise BackendError(f"could not open pool {self.name!r}: {exc!r}") from exc
            self._pool = pool
        return self

    async def close(self, *, timeout: float | timedelta | None = 10.0) -> None:
        """Close every connection: gracefully within ``timeout``, then abruptly.

        A forked child never closes the parent's connections (closing them would end
        the parent's sessions): they were dropped at fork.
        """
        timeout = check.timeout(timeout)
        pool, self._pool = self._pool, None
        self._closed = True
        if pool is None or os.getpid() != self._pid:
            return
        try:
            await asyncio.wait_for(pool.close(), timeout)
        except TimeoutError:
            pool.terminate()

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def raw(self) -> Any:
        """The underlying ``asyncpg.Pool`` (``None`` before ``open()``)."""
        return self._pool

    # -- acquire / release ---------------------------------------------------
    def acquire(self, *, timeout: float | timedelta | None = None) -> _Acquire:
        """A connection, waiting at most ``timeout`` (default ``acquire_timeout``) s.

        ``async with pool.acquire() as con: ...``, or ``con = await pool.acquire()``
        followed by ``await pool.release(con)``. Raises
        :class:`~scalekit.errors.PoolExhausted` when none became free in time, and
        :class:`~scalekit.errors.BackendError` when a connection could not be opened.
        """
        return _Acquire(self, check.optional_duration(timeout, "timeout"))

    async def _acquire(self, timeout: float | None) -> Any:
        pool = self._pool
        if pool is None:
            await self.open()
            pool = self._pool
        now = self._now
        c = self._counters
        wait = self._acquire_timeout if timeout is None else timeout
        start = now()
        deadline = start + wait
        while True:
            if c.waiters == 0 and c.in_use + self._releasing < self._max_size:
                # Fast path: nobody waits and a slot is free, so asyncpg's queue holds a
                # free holder and hands it over at once: no timer needed. (A given-back
                # connection counts in ``_releasing`` until asyncpg has taken it back,
                # and ``in_use`` is reserved here before the await.) Opening a
                # connection, if the holder has none, is bounded by ``connect_timeout``.
                c.in_use += 1
                try:
                    con = await pool.acquire()
                except BaseException as exc:
                    c.in_use -= 1
                    error = self._open_error(exc, self.settings.connect_seconds)
                    if error is exc:
                        raise
                    raise error from exc
                self._leased.add(con)
            else:
                con = await self._wait(pool, start, deadline, wait)
                self._leased.add(con)
            t = now()
            if t >= con._sk_expires:
                c.recycled.inc()
                await self._discard(con, graceful=True)
                continue
            ping_after = self._ping_after
            if ping_after is not None and t - con._sk_last_used >= ping_after:
                try:
                    await con.execute("SELECT 1", timeout=max(deadline - t, 0.001))
                except Exception:
                    c.ping_failures.inc()
                    await self._discard(con, graceful=False)
                    continue
                except BaseException:  # cancelled mid-ping: give the connection back
                    await self.release(con)
                    raise
            c.waited(t - start)
            c.acquired.inc()
            return con

    async def _wait(self, pool: Any, start: float, deadline: float, wait: float) -> Any:
        """Queue for a connection until ``deadline``; then PoolExhausted."""
        now = self._now
        c = self._counters
        c.waiters += 1
        try:
            remaining = deadline - now()
            try:
                if remaining <= 0:
                    raise TimeoutError
                # asyncio.timeout, not acquire(timeout=): on Python 3.11 asyncpg's
                # timeout is wait_for, which runs every acquire in a new task
                async with asyncio.timeout(remaining):
                    con = await pool.acquire()
            except TimeoutError:
                c.waited(now() - start)
                if c.in_use + self._releasing < self._max_size:
                    # a slot was free: the time went into opening a connection
                    raise BackendError(
                        f"pool {self.name!r}: could not open a connection within {wait:.3f}s"
                    ) from None
                c.exhausted(self.name, "postgres", self._max_size, wait)
                raise PoolExhausted(
                    self.name, size=self._max_size, waiters=c.waiters, timeout=wait
                ) from None
            except self._connect_errors as exc:
                raise self._open_error(exc, wait) from exc
            c.in_use += 1
            return con
        finally:
            c.waiters -= 1

    def _open_error(self, exc: BaseException, seconds: float) -> BaseException:
        """A driver error while opening a connection, as a BackendError (others as is)."""
        if isinstance(exc, TimeoutError):
            return BackendError(
                f"pool {self.name!r}: could not open a connection within {seconds:.3f}s"
            )
        if isinstance(exc, self._connect_errors):
            return BackendError(f"pool {self.name!r}: {exc!r}")
        return exc

    async def _discard(self, con: Any, *, graceful: bool) -> None:
        """Close an acquired connection; asyncpg hands its slot back to the pool."""
        self._leased.discard(con)
        try:
            try:
                if graceful:
                    await con.close(timeout=self.settings.connect_seconds)
                else:
                    con.terminate()
            except Exception:
                con.terminate()
            if self._pool is not None:
                await self._pool.release(con)  # a no-op for a closed proxy, kept for safety
        finally:
            self._counters.in_use -= 1

    async def release(self, con: Any) -> None:
        """Give back a connection from ``await pool.acquire()``.

        asyncpg resets the connection (a round trip) before it is free again; that
        is bounded by ``connect_timeout``, after which the connection is closed. It
        leaves ``in_use`` at once, but its slot is not offered to the fast path of
        :meth:`acquire` until then, even if the caller is cancelled meanwhile.

        Raises :class:`~scalekit.errors.ConfigurationError` for a connection that is
        not held from this pool (released already, by this or another task, or
        never acquired here): the pool's bound stays exact.
        """
        try:
            self._leased.remove(con)
        except KeyError:
            raise ConfigurationError(
                f"pool {self.name!r}: release() of a connection that is not held from "
                "this pool (released twice, or acquired elsewhere)"
            ) from None
        if self._ping_after is not None:
            con._sk_touch(self._now())
        self._counters.in_use -= 1
        self._releasing += 1
        await asyncio.shield(self._give_back(con))

    async def _give_back(self, con: Any) -> None:
        pool = self._pool
        try:
            if pool is not None:  # after close() the connection is gone with its pool
                await pool.release(con, timeout=self._release_timeout)
        finally:
            self._releasing -= 1

    # -- one-statement helpers ---------------------------------------------------
    async def _run(
        self, method: str, query: str, args: Sequence[Any], timeout: float | None
    ) -> Any:
        async with self.acquire() as con:
            try:
                return await getattr(con, method)(query, *args, timeout=timeout)
            except self._stale_errors:
                # asyncpg already re-prepares once for InvalidCachedStatementError
                # outside transactions; this covers what gets through (e.g. a type
                # changed by ALTER TYPE), never inside a transaction.
                if con.is_in_transaction():
                    raise
                self._counters.retries.inc()
                return await getattr(con, method)(query, *args, timeout=timeout)

    async def fetch(self, query: str, *args: Any, timeout: float | None = None) -> list[Any]:
        result: list[Any] = await self._run("fetch", query, args, timeout)
        return result

    async def fetchrow(self, query: str, *args: Any, timeout: float | None = None) -> Any:
        return await self._run("fetchrow", query, args, timeout)

    async def fetchval(self, query: str, *args: Any, timeout: float | None = None) -> Any:
        return await self._run("fetchval", query, args, timeout)

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str:
        result: str = await self._run("execute", query, args, timeout)
        return result

    # -- health, capacity, metrics -------------------------------------------------
    def stats(self) -> PoolStats:
        size = self._pool.get_size() if self._pool is not None else 0
        return self._counters.snapshot(
            name=self.name, kind="postgres", max_size=self.settings.max_size, size=size
        )

    async def health_check(self, *, timeout: float | timedelta | None = None) -> HealthReport:
        """``SELECT 1`` on a pooled connection within ``timeout``; never raises."""
        wait = self._acquire_timeout if timeout is None else check.duration(timeout, "timeout")
        start = self._now()
        error: str | None = None
        try:
            async with asyncio.timeout(wait):
                async with self.acquire(timeout=wait) as con:
                    await con.fetchval("SELECT 1")
        except Exception as exc:
            error = repr(exc)
        return HealthReport(
            name=self.name,
            ok=error is None,
            latency=self._now() - start,
            error=error,
            stats=self.stats(),
        )

    async def check_capacity(
        self,
        *,
        processes: int = 1,
        reserve: int = 0,
        on_excess: Literal["warn", "raise"] = "warn",
    ) -> CapacityReport:
        """Check ``processes x max_size <= max_connections - reserved - reserve``.

        ``max_connections`` and the server's reserved slots are read from the server.
        On excess: ``"warn"`` emits a ``RuntimeWarning`` (and logs it), ``"raise"``
        raises :class:`~scalekit.errors.ConfigurationError`. Behind a transaction
        pooler the server sees the pooler's connections, not these: the check is
        then an upper bound, and the pooler's own pool size is what counts.
        """
        check.count(processes, "processes")
        check.count(reserve, "reserve", minimum=0)
        if on_excess not in ("warn", "raise"):
            raise ConfigurationError(f"on_excess must be 'warn' or 'raise', got {on_excess!r}")
        rows = await self.fetch(
            "SELECT name, setting FROM pg_settings WHERE name = ANY($1::text[])",
            ["max_connections", "superuser_reserved_connections", "reserved_connections"],
        )
        settings = {row["name"]: int(row["setting"]) for row in rows}
        report = capacity_report(
            processes=processes,
            max_size=self.settings.max_size,
            max_connections=settings["max_connections"],
            server_reserved=settings.get("superuser_reserved_connections", 0)
            + settings.get("reserved_connections", 0),
            reserve=reserve,
        )
        if not report.ok:
            message = f"pool {self.name!r}: {report.message}"
            if on_excess == "raise":
                raise ConfigurationError(message)
            log.warning("%s", message)
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        return report


def _after_fork_in_child() -> None:
    for pool in list(_LIVE):
        pool._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


async def create_pg_pool(settings: PoolSettings | str, **options: Any) -> PgPool:
    """Build and open a :class:`PgPool` (``options`` as for its constructor)."""
    return await PgPool(settings, **options).open()

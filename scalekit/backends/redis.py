"""The Redis backend: ``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://``.

redis-py is imported only when a backend is built (the ``redis`` extra). Clients
get short socket timeouts and no client-side retries by default, so an outage
costs one short timeout, after which the primitive's own failure policy (with its
cooldown) takes over instead of every call waiting again.

Async clients are bound to an event loop; the backend keeps one per loop.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from scalekit._clock import Clock, as_clock
from scalekit.backends._errors import map_redis_errors
from scalekit.backends._lua import LuaScript
from scalekit.errors import ConfigurationError, MissingDependency

__all__ = ["DEFAULT_TIMEOUT", "RedisBackend"]

DEFAULT_TIMEOUT = 0.25
_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")


def _import_redis() -> Any:
    try:
        import redis
        import redis.asyncio
        import redis.asyncio.cluster
        import redis.cluster
    except ImportError as exc:  # pragma: no cover - exercised without the extra
        raise MissingDependency("the Redis backend", "redis", "redis") from exc
    return redis


def _redact(url: str) -> str:
    """The URL without its password, for messages and reprs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


class RedisBackend:
    """Connection settings for one Redis deployment, shared by every primitive.

    ``clock``: ``None`` (the default, and the only setting for production) makes
    every Lua script read Redis' own ``TIME``. Tests may pass a clock (e.g.
    :class:`scalekit.testing.FakeClock`) whose time is sent to the scripts instead,
    so that the same contract suite runs on Redis and in memory.

    ``client`` / ``async_client_factory``: bring your own redis-py clients (an
    existing ``Redis`` and a zero-argument callable returning an asyncio client for
    the running loop) instead of having them built from ``url``.

    ``max_connections`` / ``pool_timeout``: each client (the sync one, and one per
    event loop) holds at most ``max_connections`` connections (default 1,000;
    redis-py's own default of 100 turns a burst of 101 concurrent tasks into
    "Too many connections" errors). A thread finding all of the sync client's
    connections busy waits up to ``pool_timeout`` seconds for one; an asyncio task
    beyond the bound fails at once (redis-py's blocking asyncio pool would add
    ~14 us to every command here), and the primitive's failure policy applies. Not
    applied to Redis Cluster clients.
    """

    def __init__(
        self,
        url: str,
        *,
        socket_timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_TIMEOUT,
        clock: Clock | Callable[[], float] | None = None,
        client: Any = None,
        async_client_factory: Callable[[], Any] | None = None,
        max_connections: int = 1000,
        pool_timeout: float = 1.0,
        **client_options: Any,
    ) -> None:
        scheme = urlsplit(url).scheme
        if scheme not in _SCHEMES:
            raise ConfigurationError(
                f"not a Redis URL: {_redact(url)!r}; expected one of "
                + ", ".join(f"{s}://" for s in _SCHEMES)
            )
        for name, value in (
            ("socket_timeout", socket_timeout),
            ("connect_timeout", connect_timeout),
        ):
            if not isinstance(value, int | float) or value <= 0:
                raise ConfigurationError(
                    f"{name} must be a positive number of seconds, got {value!r}"
                )
        if isinstance(max_connections, bool) or not isinstance(max_connections, int):
            raise ConfigurationError(
                f"max_connections must be an int >= 1, got {max_connections!r}"
            )
        if max_connections < 1:
            raise ConfigurationError(
                f"max_connections must be an int >= 1, got {max_connections!r}"
            )
        if not isinstance(pool_timeout, int | float) or not pool_timeout > 0:
            raise ConfigurationError(
                f"pool_timeout must be a positive number of seconds, got {pool_timeout!r}"
            )
        self.max_connections = max_connections
        self.pool_timeout = float(pool_timeout)
        self.url = url
        self.cluster = scheme.endswith("+cluster")
        self._client_url = url.replace("+cluster", "", 1) if self.cluster else url
        self.socket_timeout = float(socket_timeout)
        self.connect_timeout = float(connect_timeout)
        self.server_now: Callable[[], float] | None = None if clock is None else as_clock(clock).now
        self._options = client_options
        self._lock = threading.Lock()
        self._sync: Any = client
        self._async_factory = async_client_factory
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        redis = _import_redis()
        self._noscript: type[Exception] = redis.exceptions.NoScriptError
        self._where = _redact(url)
        # the cache's own Redis calls still catch these; they move to map_redis_errors
        self._failures: tuple[type[Exception], ...] = (redis.exceptions.RedisError, OSError)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisBackend:
        query = dict(parse_qsl(urlsplit(url).query))
        kwargs: dict[str, Any] = {}
        for name in ("socket_timeout", "connect_timeout"):
            if name in query:
                try:
                    kwargs[name] = float(query[name])
                except ValueError:
                    raise ConfigurationError(
                        f"{name} in the URL must be a number of seconds, got {query[name]!r}"
                    ) from None
        kwargs.update(options)
        return cls(url, **kwargs)

    def __repr__(self) -> str:
        return f"RedisBackend({_redact(self.url)!r})"

    # -- clients -------------------------------------------------------------
    def _kwargs(self, asynchronous: bool = False) -> dict[str, Any]:
        from redis.backoff import NoBackoff

        if asynchronous:
            from redis.asyncio.retry import Retry
        else:
            from redis.retry import Retry  # type: ignore[assignment]

        kw: dict[str, Any] = {
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.connect_timeout,
        }
        if not self.cluster:
            kw["retry"] = Retry(NoBackoff(), 0)
            kw["retry_on_timeout"] = False
        kw.update(self._options)
        return kw

    def _pool_kwargs(self) -> dict[str, Any]:
        """The sync client's pool: at most ``max_connections``, and a thread that
        finds them all busy waits up to ``pool_timeout`` (redis-py's default pool
        raises "Too many connections" at once, beyond 100 in redis-py 8)."""
        kw = {"max_connections": self.max_connections, "timeout": self.pool_timeout}
        kw.update(self._kwargs())
        return kw

    def _strip_query(self) -> str:
        """The URL for redis-py, without the options this backend applies itself.

        Only the query string is touched (``urlunsplit`` would turn
        ``unix:///path.sock`` into ``unix:/path.sock``).
        """
        base, sep, query = self._client_url.partition("?")
        if not sep:
            return base
        kept = [
            (k, v)
            for k, v in parse_qsl(query, keep_blank_values=True)
            if k not in ("socket_timeout", "connect_timeout")
        ]
        from urllib.parse import urlencode

        return f"{base}?{urlencode(kept)}" if kept else base

    @property
    def sync_client(self) -> Any:
        """The redis-py client (``Redis`` or ``RedisCluster``), created on first use."""
        client = self._sync
        if client is None:
            with self._lock:
                if self._sync is None:
                    redis = _import_redis()
                    if self.cluster:
                        self._sync = redis.cluster.RedisCluster.from_url(
                            self._strip_query(), **self._kwargs()
                        )
                    else:
                        self._sync = redis.Redis.from_pool(
                            redis.BlockingConnectionPool.from_url(
                                self._strip_query(), **self._pool_kwargs()
                            )
                        )
                client = self._sync
        return client

    def async_client(self) -> Any:
        """The asyncio client for the running event loop, created on first use."""
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:
            if self._async_factory is not None:
                client = self._async_factory()
            else:
                redis = _import_redis()
                if self.cluster:
                    client = redis.asyncio.cluster.RedisCluster.from_url(
                        self._strip_query(), **self._kwargs(asynchronous=True)
                    )
                else:
                    client = redis.asyncio.Redis.from_url(
                        self._strip_query(),
                        **{
                            **self._kwargs(asynchronous=True),
                            "max_connections": self.max_connections,
                        },
                    )
            self._async[loop] = client
        return client

    def close(self) -> None:
        """Close the sync client's connections (async ones: :meth:`aclose`)."""
        with self._lock:
            client, self._sync = self._sync, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close the running loop's async client."""
        client = self._async.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    # -- operations ------------------------------------------------------------
    def evalsha(self, script: LuaScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run ``script`` in one round trip (loading it once on NOSCRIPT)."""
        client = self.sync_client
        with map_redis_errors(self._where):
            try:
                return client.evalsha(script.sha, len(keys), *keys, *args)
            except self._noscript:
                client.script_load(script.source)
                return client.evalsha(script.sha, len(keys), *keys, *args)

    async def aevalsha(self, script: LuaScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        client = self.async_client()
        with map_redis_errors(self._where):
            try:
                return await client.evalsha(script.sha, len(keys), *keys, *args)
            except self._noscript:
                await client.script_load(script.source)
                return await client.evalsha(script.sha, len(keys), *keys, *args)

    def execute(self, *command: Any) -> Any:
        """Run one Redis command (``execute("GET", key)``); driver errors mapped."""
        with map_redis_errors(self._where):
            return self.sync_client.execute_command(*command)

    async def aexecute(self, *command: Any) -> Any:
        """The async twin of :meth:`execute`; never blocks the event loop."""
        client = self.async_client()
        with map_redis_errors(self._where):
            return await client.execute_command(*command)

    def delete(self, keys: Sequence[str]) -> None:
        with map_redis_errors(self._where):
            if self.cluster:
                for k in keys:  # same hash tag, but RedisCluster.delete splits anyway
                    self.sync_client.delete(k)
            else:
                self.sync_client.delete(*keys)

    async def adelete(self, keys: Sequence[str]) -> None:
        client = self.async_client()
        with map_redis_errors(self._where):
            if self.cluster:
                for k in keys:
                    await client.delete(k)
            else:
                await client.delete(*keys)

"""The Redis backend: ``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://``.

The one Redis client layer of scalekit, built on :mod:`scalekit.pools`' clients:

- **bounded**: each client (the sync one, and one per event loop) holds at most
  ``max_connections`` connections (default 16); a caller finding them all busy
  waits up to ``pool_timeout`` and then gets a
  :class:`~scalekit.errors.BackendError` (from
  :class:`~scalekit.errors.PoolExhausted`), to which the primitive applies its
  failure policy. No burst opens more sockets than the bound.
- **auto-pipelined** on asyncio (``autopipeline=True``, the default): the commands
  of every task of a loop issued in one tick go out as one write on one connection
  (:mod:`scalekit.backends._pipeline`), so a burst of 1,000 decisions needs one
  connection and one round trip of latency.
- **closed with its loop**: an event loop's client is closed when the loop shuts
  down its async generators (``asyncio.run`` and ``asyncio.Runner`` do), so 300
  successive ``asyncio.run()`` calls leave no connection behind.
- **observable**: :meth:`RedisBackend.stats` (connections, waiters, pipeline depth,
  errors) and :meth:`RedisBackend.health` / :meth:`RedisBackend.ahealth`.

Clients get short socket timeouts and no client-side retries, so an outage costs one
short timeout, after which the primitive's own failure policy (with its cooldown)
takes over. redis-py is imported only when a backend is built (the ``redis`` extra).
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from scalekit._clock import Clock, as_clock
from scalekit._urls import redact as _redact
from scalekit.backends._errors import map_redis_errors
from scalekit.backends._lua import LuaScript
from scalekit.errors import ConfigurationError, MissingDependency

if TYPE_CHECKING:
    from scalekit.backends._pipeline import AutoPipeline, PipelineCounters
    from scalekit.pools._metrics import PoolStats
    from scalekit.pools._postgres import HealthReport

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_TIMEOUT",
    "RedisBackend",
    "RedisStats",
]

DEFAULT_TIMEOUT = 0.25
#: a connect may take longer than a command: a cold process opens its first
#: connection while the server is busy with everyone else's
DEFAULT_CONNECT_TIMEOUT = 1.0
DEFAULT_MAX_CONNECTIONS = 16
#: redis-py's cluster clients do not queue a caller beyond the bound (they fail it at
#: once), so their default bound per node is wide enough for a burst
DEFAULT_CLUSTER_MAX_CONNECTIONS = 1000
DEFAULT_POOL_TIMEOUT = 5.0  # the pools' own acquire_timeout default
DEFAULT_MAX_IDLE = 300.0
_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
#: URL options this backend applies itself (the rest are redis-py's)
BACKEND_OPTIONS = (
    "socket_timeout",
    "connect_timeout",
    "max_connections",
    "pool_timeout",
    "max_idle",
    "autopipeline",
)
#: URL options handed to redis-py unchanged
DRIVER_OPTIONS = (
    "db",
    "client_name",
    "health_check_interval",
    "socket_keepalive",
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_check_hostname",
    "protocol",
)


def _import_redis() -> Any:
    try:
        import redis
        import redis.asyncio
        import redis.asyncio.cluster
        import redis.cluster
    except ImportError as exc:  # pragma: no cover - exercised without the extra
        raise MissingDependency("the Redis backend", "redis", "redis") from exc
    return redis


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


#: parsers of this backend's URL options (used by scalekit.backends' scheme registry)
URL_PARSERS: dict[str, Callable[[str], Any]] = {
    "socket_timeout": float,
    "connect_timeout": float,
    "max_connections": int,
    "pool_timeout": float,
    "max_idle": float,
    "autopipeline": _bool,
    **dict.fromkeys(DRIVER_OPTIONS, str),
}


def _seconds(name: str, value: Any) -> float:
    from scalekit._validate import duration

    return duration(value, name)


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisStats:
    """A snapshot of a :class:`RedisBackend` in this process.

    - ``max_connections``: the bound per client; ``connections``: sockets open now in
      every client of this process (the sync one and one per event loop);
      ``in_use`` / ``waiters``: connections handed out / callers waiting for one.
    - ``commands`` / ``batches``: commands sent through the auto-pipeline and the
      writes they took (``commands / batches`` is the mean batch size);
      ``max_pipeline_depth``: the most replies ever awaited on one connection;
      ``in_flight``: commands sent or queued and not answered yet.
    - ``errors``: callers failed by a connection error or a timeout in the
      auto-pipeline; ``pool_timeouts``: waits for a connection that ran out.
    - ``pools``: the :class:`~scalekit.pools.PoolStats` of every client.
    """

    max_connections: int
    connections: int
    in_use: int
    waiters: int
    commands: int
    batches: int
    max_pipeline_depth: int
    in_flight: int
    errors: int
    pool_timeouts: int
    pools: tuple[PoolStats, ...]


class _LoopClient:
    """The asyncio client of one event loop, its auto-pipeline and its closer."""

    __slots__ = ("client", "closer", "dead", "pipeline")

    def __init__(self, client: Any, pipeline: AutoPipeline | None) -> None:
        self.client = client
        self.pipeline = pipeline
        self.dead = False
        self.closer: AsyncGenerator[None, None] | None = None

    async def aclose(self) -> None:
        if self.pipeline is not None:
            await self.pipeline.aclose()
        await self.client.aclose()  # pools' clients close their pool with them


class RedisBackend:
    """Connection settings and clients for one Redis deployment, shared by every primitive.

    ``socket_timeout`` (0.25 s): the longest wait for a reply; ``connect_timeout``
    (1 s): the longest wait to open a connection.

    ``max_connections`` (16) / ``pool_timeout`` (5 s): each client (the sync one,
    and one per event loop) holds at most ``max_connections`` connections; a caller
    finding them all busy waits up to ``pool_timeout`` and then fails with
    :class:`~scalekit.errors.BackendError`. On Redis Cluster the bound is per node
    and defaults to 1,000: redis-py's cluster clients fail a caller beyond it at once
    instead of queueing it. Size it so that processes x event loops
    x ``max_connections`` stays well below the server's ``maxclients`` (10,000 by
    default). ``max_idle`` (300 s): a client closes connections unused that long
    (when it is next used).

    ``autopipeline`` (True): asyncio commands issued in one loop tick share one
    write on one connection. Not applied to Redis Cluster (the commands of one tick
    go to different nodes; redis-py's cluster client routes each one) nor to clients
    you bring.

    ``clock``: ``None`` (the default, and the only setting for production) makes
    every Lua script read Redis' own ``TIME``. Tests may pass a clock (e.g.
    :class:`scalekit.testing.FakeClock`) whose time is sent to the scripts instead,
    so that the same contract suite runs on Redis and in memory.

    ``client`` / ``async_client_factory``: bring your own redis-py clients (an
    existing ``Redis`` and a zero-argument callable returning an asyncio client for
    the running loop) instead of having them built from ``url``.
    """

    def __init__(
        self,
        url: str,
        *,
        socket_timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        clock: Clock | Callable[[], float] | None = None,
        client: Any = None,
        async_client_factory: Callable[[], Any] | None = None,
        max_connections: int | None = None,
        pool_timeout: float = DEFAULT_POOL_TIMEOUT,
        max_idle: float | None = DEFAULT_MAX_IDLE,
        autopipeline: bool = True,
        **client_options: Any,
    ) -> None:
        if not isinstance(url, str):
            raise ConfigurationError(f"a Redis URL must be a string, got {url!r}")
        scheme = urlsplit(url).scheme
        if scheme not in _SCHEMES:
            raise ConfigurationError(
                f"not a Redis URL: {_redact(url)!r}; expected one of "
                + ", ".join(f"{s}://" for s in _SCHEMES)
            )
        if "decode_responses" in client_options:
            raise ConfigurationError(
                "decode_responses is not supported: the primitives read bytes from Redis"
            )
        self.socket_timeout = _seconds("socket_timeout", socket_timeout)
        self.connect_timeout = _seconds("connect_timeout", connect_timeout)
        self.pool_timeout = _seconds("pool_timeout", pool_timeout)
        self.max_idle = None if max_idle is None else _seconds("max_idle", max_idle)
        cluster = scheme.endswith("+cluster")
        if max_connections is None:
            max_connections = (
                DEFAULT_CLUSTER_MAX_CONNECTIONS if cluster else DEFAULT_MAX_CONNECTIONS
            )
        if (
            isinstance(max_connections, bool)
            or not isinstance(max_connections, int)
            or not 1 <= max_connections <= 100_000
        ):
            raise ConfigurationError(
                f"max_connections must be an int in [1, 100000], got {max_connections!r}"
            )
        if not isinstance(autopipeline, bool):
            raise ConfigurationError(f"autopipeline must be True or False, got {autopipeline!r}")
        self.max_connections = max_connections
        self.url = url
        self.cluster = cluster
        self.autopipeline = autopipeline and not self.cluster and async_client_factory is None
        self._client_url = self._driver_url(url)
        self.server_now: Callable[[], float] | None = None if clock is None else as_clock(clock).now
        self._options = client_options
        self._lock = threading.Lock()
        self._sync: Any = client
        self._own_sync = client is None
        self._async_factory = async_client_factory
        self._loops: dict[asyncio.AbstractEventLoop, _LoopClient] = {}
        redis = _import_redis()
        self._noscript: type[Exception] = redis.exceptions.NoScriptError
        self._where = _redact(url)
        self._mapped = map_redis_errors(self._where)  # one stateless instance, reused
        self._pipe_counters = _attach_pipeline_metrics(self)
        # the cache's own Redis calls still catch these; they move to map_redis_errors
        self._failures: tuple[type[Exception], ...] = (redis.exceptions.RedisError, OSError)
        self._script_loads: dict[tuple[asyncio.AbstractEventLoop, str], asyncio.Future[Any]] = {}

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisBackend:
        """Build from a URL whose query may carry this backend's options
        (``?socket_timeout=0.5&max_connections=32&autopipeline=false``); keyword
        ``options`` win. Unknown options are refused (see
        :func:`scalekit.backends.parse_backend_url`)."""
        from scalekit.backends import parse_backend_url

        _, parsed = parse_backend_url(url)
        kwargs = {k: v for k, v in parsed.items() if k in BACKEND_OPTIONS}
        kwargs.update(options)
        return cls(url, **kwargs)

    def __repr__(self) -> str:
        return f"RedisBackend({_redact(self.url)!r})"

    @staticmethod
    def _driver_url(url: str) -> str:
        """The URL for redis-py: ``+cluster`` and this backend's own options removed.

        Only the query string is touched (``urlunsplit`` would turn
        ``unix:///path.sock`` into ``unix:/path.sock``).
        """
        url = url.replace("+cluster", "", 1)
        base, sep, query = url.partition("?")
        if not sep:
            return base
        kept = [
            (k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in BACKEND_OPTIONS
        ]
        return f"{base}?{urlencode(kept)}" if kept else base

    # -- clients -------------------------------------------------------------
    def _settings(self) -> Any:
        from scalekit.pools._settings import PoolSettings

        return PoolSettings(
            url=self._client_url,
            max_size=self.max_connections,
            acquire_timeout=self.pool_timeout,
            connect_timeout=self.connect_timeout,
            command_timeout=self.socket_timeout,
            max_idle=self.max_idle,
            name=self._where,
        )

    def _driver_options(self, asynchronous: bool) -> dict[str, Any]:
        from redis.backoff import NoBackoff

        if asynchronous:
            from redis.asyncio.retry import Retry
        else:
            from redis.retry import Retry  # type: ignore[assignment]
        kw: dict[str, Any] = {"retry": Retry(NoBackoff(), 0), "retry_on_timeout": False}
        kw.update(self._options)
        return kw

    def _cluster_kwargs(self, asynchronous: bool) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.connect_timeout,
            "max_connections": self.max_connections,
        }
        if asynchronous:
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            kw["retry"] = Retry(NoBackoff(), 0)
        kw.update(self._options)
        return kw

    @property
    def sync_client(self) -> Any:
        """The redis-py client (``Redis`` or ``RedisCluster``), created on first use.

        A ``Redis`` on :func:`scalekit.pools.redis_client`'s bounded blocking pool."""
        client = self._sync
        if client is None:
            with self._lock:
                if self._sync is None:
                    redis = _import_redis()
                    if self.cluster:
                        self._sync = redis.cluster.RedisCluster.from_url(
                            self._client_url, **self._cluster_kwargs(False)
                        )
                    else:
                        from scalekit.pools._redis import redis_client

                        self._sync = redis_client(self._settings(), **self._driver_options(False))
                client = self._sync
        return client

    def async_client(self) -> Any:
        """The asyncio client for the running event loop, created on first use.

        Closed when the loop shuts down (``asyncio.run`` / ``asyncio.Runner``), or by
        :meth:`aclose`. Commands sent on it directly bypass the auto-pipeline but
        share its bounded pool."""
        return self._loop_client().client

    def _loop_client(self) -> _LoopClient:
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            state = self._new_loop_client(loop)
        return state

    def _new_loop_client(self, loop: asyncio.AbstractEventLoop) -> _LoopClient:
        self._forget_closed_loops()
        pipeline = None
        if self._async_factory is not None:
            client = self._async_factory()
        elif self.cluster:
            redis = _import_redis()
            client = redis.asyncio.cluster.RedisCluster.from_url(
                self._client_url, **self._cluster_kwargs(True)
            )
        else:
            from scalekit.pools._redis import async_redis_client

            client = async_redis_client(self._settings(), **self._driver_options(True))
            if self.autopipeline:
                from scalekit.backends._pipeline import AutoPipeline

                pipeline = AutoPipeline(client, self.socket_timeout, self._pipe_counters)
        state = _LoopClient(client, pipeline)
        self._loops[loop] = state
        if not getattr(loop, "_asyncgens_shutdown_called", False):
            self._watch_loop(state)  # (else the loop is ending: aclose() or the GC closes it)
        return state

    def _watch_loop(self, state: _LoopClient) -> None:
        """Close ``state`` when its loop shuts down its async generators.

        ``asyncio.run`` / ``asyncio.Runner`` call ``loop.shutdown_asyncgens()`` before
        closing the loop; a suspended async generator registered with the loop is
        closed there, inside the loop, which lets it close the client with awaits.
        """
        backend = self

        async def closer() -> AsyncGenerator[None, None]:
            try:
                yield
            finally:
                if not state.dead:
                    state.dead = True
                    for loop, s in list(backend._loops.items()):
                        if s is state:
                            del backend._loops[loop]
                    await state.aclose()

        agen = closer()
        state.closer = agen
        step = agen.asend(None)  # registers agen with the running loop's hooks
        try:
            step.send(None)  # runs to the ``yield`` without suspending
        except StopIteration:
            pass

    def _forget_closed_loops(self) -> None:
        """Drop the clients of loops closed without ``shutdown_asyncgens()``.

        Their sockets belong to a closed loop and cannot be closed gracefully; they are
        released to the garbage collector."""
        for loop, state in list(self._loops.items()):
            if loop.is_closed():
                del self._loops[loop]
                state.dead = True
                _finish(state.closer)

    def close(self) -> None:
        """Close the sync client's connections (asyncio ones: :meth:`aclose`)."""
        with self._lock:
            client, self._sync = self._sync, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close the running loop's asyncio client (and its auto-pipeline)."""
        state = self._loops.pop(asyncio.get_running_loop(), None)
        if state is not None and not state.dead:
            state.dead = True
            _finish(state.closer)
            await state.aclose()

    # -- stats and health -------------------------------------------------------
    def stats(self) -> RedisStats:
        """Connections, waiters, pipeline depth and errors of every client in this process."""
        pools: list[PoolStats] = []
        commands = batches = depth = in_flight = errors = 0
        clients = [self._sync] + [s.client for s in list(self._loops.values())]
        for client in clients:
            pool = getattr(client, "connection_pool", None)
            stats = getattr(pool, "stats", None)
            if stats is not None:
                pools.append(stats())
        counters = self._pipe_counters
        commands, batches = int(counters.commands.value), int(counters.batches.value)
        depth, errors = counters.max_depth, int(counters.errors.value)
        in_flight = self._in_flight()
        return RedisStats(
            max_connections=self.max_connections,
            connections=sum(p.size for p in pools),
            in_use=sum(p.in_use for p in pools),
            waiters=sum(p.waiters for p in pools),
            commands=commands,
            batches=batches,
            max_pipeline_depth=depth,
            in_flight=in_flight,
            errors=errors,
            pool_timeouts=sum(p.timeouts for p in pools),
            pools=tuple(pools),
        )

    def _in_flight(self) -> int:
        return sum(s.pipeline.in_flight for s in list(self._loops.values()) if s.pipeline)

    def health(self) -> HealthReport:
        """PING through the sync client; never raises (the error is in the report)."""
        start = time.monotonic()
        try:
            self.execute("PING")
        except Exception as exc:
            return self._report(self.sync_client, start, repr(exc))
        return self._report(self.sync_client, start, None)

    async def ahealth(self) -> HealthReport:
        """PING through this loop's client (auto-pipelined when on); never raises."""
        state = self._loop_client()
        start = time.monotonic()
        try:
            await self.aexecute("PING")
        except Exception as exc:
            return self._report(state.client, start, repr(exc))
        return self._report(state.client, start, None)

    def _report(self, client: Any, start: float, error: str | None) -> HealthReport:
        from scalekit.pools._postgres import HealthReport

        latency = time.monotonic() - start
        stats = getattr(getattr(client, "connection_pool", None), "stats", None)
        if stats is not None:
            snapshot: PoolStats = stats()
        else:  # Redis Cluster or a client you brought: no pool of scalekit's
            from scalekit.pools._metrics import PoolCounters

            snapshot = PoolCounters().snapshot(
                name=self._where, kind="redis", max_size=self.max_connections, size=0
            )
        return HealthReport(
            name=self._where, ok=error is None, latency=latency, error=error, stats=snapshot
        )

    # -- operations ------------------------------------------------------------
    def evalsha(self, script: LuaScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run ``script`` in one round trip (loading it once on NOSCRIPT)."""
        client = self.sync_client
        with self._mapped:
            try:
                return client.evalsha(script.sha, len(keys), *keys, *args)
            except self._noscript:
                client.script_load(script.source)
                return client.evalsha(script.sha, len(keys), *keys, *args)

    async def aevalsha(self, script: LuaScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """The async twin of :meth:`evalsha`; auto-pipelined when on."""
        state = self._loops.get(asyncio.get_running_loop()) or self._loop_client()
        pipeline = state.pipeline
        with self._mapped:
            if pipeline is not None:
                try:
                    return await pipeline.execute("EVALSHA", script.sha, len(keys), *keys, *args)
                except self._noscript:
                    await self._load_once(pipeline, script)
                    return await pipeline.execute("EVALSHA", script.sha, len(keys), *keys, *args)
            client = state.client
            try:
                return await client.evalsha(script.sha, len(keys), *keys, *args)
            except self._noscript:
                await client.script_load(script.source)
                return await client.evalsha(script.sha, len(keys), *keys, *args)

    async def _load_once(self, pipeline: AutoPipeline, script: LuaScript) -> None:
        """SCRIPT LOAD once for every caller of this loop that got NOSCRIPT at once."""
        key = (asyncio.get_running_loop(), script.sha)
        pending = self._script_loads.get(key)
        if pending is None:
            pending = asyncio.ensure_future(pipeline.execute("SCRIPT", "LOAD", script.source))
            self._script_loads[key] = pending

            def done(f: asyncio.Future[Any]) -> None:
                self._script_loads.pop(key, None)
                if not f.cancelled():
                    f.exception()  # retrieved: every waiter may have been cancelled

            pending.add_done_callback(done)
        await asyncio.shield(pending)

    def execute(self, *command: Any) -> Any:
        """Run one Redis command (``execute("GET", key)``); driver errors mapped."""
        with self._mapped:
            return self.sync_client.execute_command(*command)

    async def aexecute(self, *command: Any) -> Any:
        """The async twin of :meth:`execute`; never blocks the event loop;
        auto-pipelined when on."""
        state = self._loops.get(asyncio.get_running_loop()) or self._loop_client()
        pipeline = state.pipeline
        with self._mapped:
            if pipeline is not None:
                return await pipeline.execute(*command)
            return await state.client.execute_command(*command)

    def delete(self, keys: Sequence[str]) -> None:
        with self._mapped:
            if self.cluster:
                for k in keys:  # same hash tag, but RedisCluster.delete splits anyway
                    self.sync_client.delete(k)
            else:
                self.sync_client.delete(*keys)

    async def adelete(self, keys: Sequence[str]) -> None:
        if self.cluster:
            for k in keys:
                await self.aexecute("DEL", k)
        elif keys:
            await self.aexecute("DEL", *keys)

    def scan_iter(self, pattern: str, count: int = 500) -> Iterator[list[Any]]:
        """The names matching ``pattern``, in batches of about ``count``, from the
        server, or from every primary of a Cluster (``SCAN ... MATCH ... COUNT``);
        driver errors mapped. A name written or dropped meanwhile may be missed or
        seen twice (``SCAN``'s guarantee)."""
        if self.cluster:
            batch: list[Any] = []
            with self._mapped:
                for name in self.sync_client.scan_iter(match=pattern, count=count):
                    batch.append(name)
                    if len(batch) >= count:
                        yield batch
                        batch = []
            if batch:
                yield batch
            return
        cursor: Any = 0
        while True:
            cursor, names = self.execute("SCAN", cursor, "MATCH", pattern, "COUNT", count)
            yield list(names)
            if int(cursor) == 0:
                return

    async def ascan_iter(self, pattern: str, count: int = 500) -> AsyncIterator[list[Any]]:
        """The async twin of :meth:`scan_iter`; never blocks the event loop."""
        if self.cluster:
            batch: list[Any] = []
            with self._mapped:
                client = self._loop_client().client
                async for name in client.scan_iter(match=pattern, count=count):
                    batch.append(name)
                    if len(batch) >= count:
                        yield batch
                        batch = []
            if batch:
                yield batch
            return
        cursor: Any = 0
        while True:
            cursor, names = await self.aexecute("SCAN", cursor, "MATCH", pattern, "COUNT", count)
            yield list(names)
            if int(cursor) == 0:
                return


def _finish(agen: AsyncGenerator[None, None] | None) -> None:
    """Close a suspended closer generator without awaiting (its state is marked dead)."""
    if agen is None:
        return
    step = agen.aclose()
    try:
        step.send(None)
    except (StopIteration, RuntimeError):
        pass


def _attach_pipeline_metrics(backend: RedisBackend) -> PipelineCounters:
    """The backend's auto-pipeline counters, in the metrics registry under its redacted
    URL (``scalekit_redis_commands_total`` ...; backends of one URL add up)."""
    from scalekit.backends._pipeline import PipelineCounters
    from scalekit.observability._metrics import default_registry as registry

    label = backend._where[:128]
    counters = PipelineCounters()
    families = _pipeline_families(registry)
    counters.commands = families["commands"].attach(backend, label)
    counters.batches = families["batches"].attach(backend, label)
    counters.errors = families["errors"].attach(backend, label)
    ref = weakref.ref(backend)

    def in_flight() -> float:
        b = ref()
        return float(b._in_flight()) if b is not None else 0.0

    def depth() -> float:
        return float(counters.max_depth)

    families["in_flight"].attach(backend, label).set_function(in_flight)
    families["max_depth"].attach(backend, label).set_function(depth)
    return counters


_FAMILIES: dict[str, Any] = {}


def _pipeline_families(registry: Any) -> dict[str, Any]:
    if not _FAMILIES:
        labels = ("backend",)
        _FAMILIES.update(
            commands=registry.counter(
                "scalekit_redis_commands_total",
                "Commands sent through the auto-pipeline.",
                labels=labels,
            ),
            batches=registry.counter(
                "scalekit_redis_batches_total", "Writes those commands took.", labels=labels
            ),
            errors=registry.counter(
                "scalekit_redis_errors_total",
                "Callers failed by a connection error or a timeout in the auto-pipeline.",
                labels=labels,
            ),
            in_flight=registry.gauge(
                "scalekit_redis_in_flight",
                "Commands sent or queued, not answered yet.",
                labels=labels,
            ),
            max_depth=registry.gauge(
                "scalekit_redis_max_pipeline_depth",
                "Most replies ever awaited on one connection.",
                labels=labels,
            ),
        )
    return _FAMILIES

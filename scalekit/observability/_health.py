"""``await health_report(...)``: PostgreSQL, Redis and the registered primitives,
each figure rated against thresholds, in one typed, JSON-serialisable report.

Every probe runs in its own task with its own timeout. A probe that raises or
does not answer in time becomes one ``critical`` check carrying the error; it is
never raised and never delays the others: the report returns when the slowest
probe answers or its timeout ends, whichever is first (a probe still running then
is cancelled and left to finish its cleanup on its own).

Drivers (``asyncpg``, ``redis``) are imported when a probe of theirs runs.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from scalekit.errors import ConfigurationError, MissingDependency
from scalekit.observability._metrics import Registry, default_registry

__all__ = [
    "Check",
    "HealthReport",
    "PostgresProbe",
    "Probe",
    "RedisProbe",
    "RegistryProbe",
    "Status",
    "Thresholds",
    "health_report",
]

Status = Literal["ok", "warning", "critical"]
_ORDER: dict[str, int] = {"ok": 0, "warning": 1, "critical": 2}


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Share of a limit at which a check turns ``warning`` / ``critical``."""

    warning: float = 0.75
    critical: float = 0.90

    def __post_init__(self) -> None:
        for n in ("warning", "critical"):
            v = getattr(self, n)
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v <= 10:
                raise ConfigurationError(f"{n} must be a share in (0, 10], got {v!r}")
        if self.warning > self.critical:
            raise ConfigurationError(
                f"warning ({self.warning}) must not exceed critical ({self.critical})"
            )

    def rate(self, ratio: float | None) -> Status:
        if ratio is None:
            return "ok"
        if ratio >= self.critical:
            return "critical"
        return "warning" if ratio >= self.warning else "ok"


@dataclass(frozen=True, slots=True)
class Check:
    """One figure: ``value`` against ``limit`` (``ratio`` = value / limit), rated.

    ``error`` is set when the probe behind the check failed or timed out (then
    ``status`` is ``critical`` and there is no value). ``data`` holds details (the
    largest tables, per-replica lag, ...).
    """

    name: str
    status: Status
    value: float | None = None
    limit: float | None = None
    unit: str = ""
    detail: str = ""
    error: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.limit:
            return None
        return self.value / self.limit

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ratio"] = self.ratio
        d["data"] = dict(self.data)
        return d


@dataclass(frozen=True, slots=True)
class HealthReport:
    """Every check, the worst status, and whether each probe answered (``ready``)."""

    status: Status
    ready: bool
    checks: tuple[Check, ...]
    generated_at: float
    duration_seconds: float

    def check(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "ready": self.ready,
            "generated_at": self.generated_at,
            "duration_seconds": self.duration_seconds,
            "checks": [c.as_dict() for c in self.checks],
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), allow_nan=False, default=str)


Rate = Callable[[str], Thresholds]


def _figure(
    rate: Rate,
    name: str,
    value: float | None,
    limit: float | None,
    *,
    unit: str = "",
    detail: str = "",
    data: Mapping[str, Any] | None = None,
    status: Status | None = None,
) -> Check:
    ratio = value / limit if value is not None and limit else None
    return Check(
        name,
        rate(name).rate(ratio) if status is None else status,
        value,
        limit,
        unit,
        detail,
        None,
        data or {},
    )


class Probe(Protocol):
    """Anything with a ``name``, a ``timeout`` and ``async run(rate) -> checks``."""

    name: str
    timeout: float

    async def run(self, rate: Rate) -> list[Check]: ...


def _positive(name: str, value: float | None, *, allow_none: bool = True) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ConfigurationError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _probe_name(name: str) -> str:
    if not isinstance(name, str) or not name or "." in name or len(name) > 64:
        raise ConfigurationError(f"a probe's name is a non-empty str without dots, got {name!r}")
    return name


class PostgresProbe:
    """Database size and largest tables, connections in use vs ``max_connections``,
    the oldest open transaction, replication lag (where there is replication) and
    rows in default partitions (rows there mean a missing partition).
    It reads in one read-only transaction with a ``SET LOCAL statement_timeout``
    (so it works through PgBouncer in transaction mode).

    ``database_size_limit`` (bytes; your provider's quota) turns the size into a
    rated figure; ``max_transaction_age`` and ``max_replication_lag`` (seconds) are
    the limits those figures are rated against. The probe opens one connection
    (``asyncpg.connect``) with a server-side ``statement_timeout``.
    """

    def __init__(
        self,
        dsn: str,
        *,
        name: str = "postgres",
        timeout: float = 2.0,
        largest_tables: int = 5,
        database_size_limit: float | None = None,
        max_transaction_age: float = 300.0,
        max_replication_lag: float = 60.0,
    ) -> None:
        if not isinstance(dsn, str) or not dsn:
            raise ConfigurationError("dsn must be a PostgreSQL URL or DSN string")
        self.dsn = dsn
        self.name = _probe_name(name)
        self.timeout = float(_positive("timeout", timeout, allow_none=False) or 0)
        if isinstance(largest_tables, bool) or not isinstance(largest_tables, int):
            raise ConfigurationError(f"largest_tables must be an int, got {largest_tables!r}")
        if not 0 <= largest_tables <= 100:
            raise ConfigurationError(f"largest_tables must be 0..100, got {largest_tables!r}")
        self.largest_tables = largest_tables
        self.database_size_limit = _positive("database_size_limit", database_size_limit)
        self.max_transaction_age = _positive("max_transaction_age", max_transaction_age)
        self.max_replication_lag = _positive("max_replication_lag", max_replication_lag)

    def __repr__(self) -> str:
        return f"PostgresProbe(name={self.name!r}, timeout={self.timeout})"

    async def run(self, rate: Rate) -> list[Check]:
        try:
            import asyncpg
        except ImportError as exc:  # pragma: no cover - exercised without the extra
            raise MissingDependency("PostgresProbe", "postgres", "asyncpg") from exc
        conn = await asyncpg.connect(
            self.dsn,
            timeout=self.timeout,
            statement_cache_size=0,  # works through PgBouncer in transaction mode
            # application_name only: PgBouncer refuses other startup parameters
            server_settings={"application_name": "scalekit-health"},
        )
        try:
            # SET LOCAL ends with the transaction: safe behind a transaction pooler
            async with conn.transaction(readonly=True):
                ms = max(1, int(self.timeout * 1000))
                await conn.execute(f"SET LOCAL statement_timeout = {ms}")
                return await self._checks(conn, rate)
        except BaseException:
            conn.terminate()
            raise
        finally:
            if not conn.is_closed():
                await conn.close(timeout=self.timeout)

    async def _checks(self, conn: Any, rate: Rate) -> list[Check]:
        n = self.name
        out: list[Check] = []
        size = await conn.fetchval("SELECT pg_database_size(current_database())")
        tables = await conn.fetch(
            """
            SELECT n.nspname AS schema, c.relname AS name,
                   pg_total_relation_size(c.oid) AS bytes
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'm', 'p')
              AND n.nspname NOT IN ('pg_catalog', 'information_schema')
              AND n.nspname NOT LIKE 'pg_toast%'
            ORDER BY 3 DESC, 1, 2 LIMIT $1
            """,
            self.largest_tables,
        )
        out.append(
            _figure(
                rate, f"{n}.database_size", float(size), self.database_size_limit, unit="bytes",
                data={"largest_tables": [dict(r) for r in tables]},
            )
        )  # fmt: skip
        row = await conn.fetchrow(
            """
            SELECT (SELECT count(*) FROM pg_stat_activity
                    WHERE backend_type = 'client backend') AS in_use,
                   current_setting('max_connections')::int AS max,
                   current_setting('superuser_reserved_connections')::int AS reserved,
                   (SELECT extract(epoch FROM now() - min(xact_start))
                      FROM pg_stat_activity
                     WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid()
                       AND backend_type = 'client backend') AS oldest
            """
        )
        out.append(
            _figure(
                rate, f"{n}.connections", float(row["in_use"]), float(row["max"]),
                unit="connections",
                data={"superuser_reserved": row["reserved"]},
            )
        )  # fmt: skip
        oldest = float(row["oldest"] or 0.0)
        out.append(
            _figure(
                rate, f"{n}.oldest_transaction", oldest, self.max_transaction_age,
                unit="seconds",
            )
        )  # fmt: skip
        lag = await self._replication(conn)
        if lag is not None:
            worst, data = lag
            out.append(
                _figure(
                    rate, f"{n}.replication_lag", worst, self.max_replication_lag,
                    unit="seconds", data=data,
                )
            )  # fmt: skip
        out.append(await self._default_partitions(conn, rate))
        return out

    async def _replication(self, conn: Any) -> tuple[float, dict[str, Any]] | None:
        if await conn.fetchval("SELECT pg_is_in_recovery()"):
            lag = await conn.fetchval(
                "SELECT coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0)"
            )
            return float(lag), {"role": "standby"}
        rows = await conn.fetch(
            "SELECT application_name, client_addr::text AS addr, "
            "coalesce(extract(epoch FROM replay_lag), 0) AS lag FROM pg_stat_replication"
        )
        if not rows:
            return None
        replicas = [
            {"name": r["application_name"], "addr": r["addr"], "lag_seconds": float(r["lag"])}
            for r in rows
        ]
        return max(r["lag_seconds"] for r in replicas), {"role": "primary", "replicas": replicas}

    async def _default_partitions(self, conn: Any, rate: Rate) -> Check:
        parts = await conn.fetch(
            """
            SELECT n.nspname AS schema, c.relname AS name, p.relname AS parent
            FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace
            JOIN pg_inherits i ON i.inhrelid = c.oid
            JOIN pg_class p ON p.oid = i.inhparent
            WHERE c.relispartition AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT'
            ORDER BY 1, 2
            """
        )
        cap = 10_000  # count at most this many rows per partition: the probe stays cheap
        found = []
        total = 0
        for p in parts:
            ident = f"{_quote(p['schema'])}.{_quote(p['name'])}"
            rows = int(
                await conn.fetchval(f"SELECT count(*) FROM (SELECT 1 FROM {ident} LIMIT {cap}) s")
            )
            total += rows
            found.append(
                {"partition": f"{p['schema']}.{p['name']}", "parent": p["parent"], "rows": rows}
            )
        return _figure(
            rate,
            f"{self.name}.default_partitions",
            float(total),
            None,
            unit="rows",
            detail="rows in a default partition mean a partition is missing" if total else "",
            data={"partitions": found, "counted_up_to": cap},
            status="warning" if total else "ok",
        )


def _quote(ident: str) -> str:
    return '"' + ident.replace('"', '""') + '"'


class RedisProbe:
    """Used memory vs ``maxmemory``, connected clients vs ``maxclients``, and evicted
    keys (with the eviction policy), read with ``INFO`` over one new connection."""

    def __init__(self, url: str, *, name: str = "redis", timeout: float = 1.0) -> None:
        if not isinstance(url, str) or not url:
            raise ConfigurationError("url must be a redis:// URL")
        self.url = url
        self.name = _probe_name(name)
        self.timeout = float(_positive("timeout", timeout, allow_none=False) or 0)

    def __repr__(self) -> str:
        return f"RedisProbe(name={self.name!r}, timeout={self.timeout})"

    async def run(self, rate: Rate) -> list[Check]:
        try:
            import redis.asyncio as aredis
            from redis.exceptions import ResponseError
        except ImportError as exc:  # pragma: no cover - exercised without the extra
            raise MissingDependency("RedisProbe", "redis", "redis") from exc
        client = aredis.Redis.from_url(
            self.url,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            retry_on_timeout=False,
            single_connection_client=True,
        )
        try:
            info = await client.info()
            maxclients = info.get("maxclients")
            if maxclients is None:
                try:
                    maxclients = (await client.config_get("maxclients")).get("maxclients")
                except ResponseError:  # CONFIG disabled (managed Redis)
                    maxclients = None
        finally:
            await client.aclose()
        n = self.name
        used = float(info.get("used_memory", 0))
        maxmemory = float(info.get("maxmemory", 0)) or None
        policy = str(info.get("maxmemory_policy", ""))
        return [
            _figure(
                rate, f"{n}.memory", used, maxmemory, unit="bytes",
                detail="" if maxmemory else "no maxmemory set: Redis grows until the host runs out",
                data={"policy": policy, "peak": info.get("used_memory_peak")},
            ),
            _figure(
                rate, f"{n}.clients", float(info.get("connected_clients", 0)),
                float(maxclients) if maxclients else None, unit="connections",
                data={"blocked": info.get("blocked_clients", 0)},
            ),
            _figure(
                rate, f"{n}.evictions", float(info.get("evicted_keys", 0)), None, unit="keys",
                detail=f"keys evicted since start (policy {policy})",
                data={"policy": policy},
            ),
        ]  # fmt: skip


class RegistryProbe:
    """The primitives in a :class:`Registry` (reporting natively, or registered as
    sources): each pool's
    utilisation (in use vs its maximum), each breaker's state (open: ``warning``,
    half-open: ``warning``), each cache's hit ratio (reported, not rated).

    Reading a source is a call to its ``stats()``, run in a worker thread so a
    slow one cannot hold up the event loop.
    """

    def __init__(
        self, registry: Registry | None = None, *, name: str = "primitives", timeout: float = 1.0
    ) -> None:
        self.registry = default_registry if registry is None else registry
        self.name = _probe_name(name)
        self.timeout = float(_positive("timeout", timeout, allow_none=False) or 0)

    async def run(self, rate: Rate) -> list[Check]:
        read = await asyncio.to_thread(self._read)
        checks = [c for kind, name, obj in read if (c := _rate_source(rate, kind, name, obj))]
        seen: set[str] = set()
        out = []
        for c in checks:  # a registered source and the native series of one primitive
            if c.name not in seen:
                seen.add(c.name)
                out.append(c)
        return out

    def _read(self) -> list[tuple[str, str, Any]]:
        """The sources, then what the pools and breakers report natively (as stats
        dicts of the fields :func:`_rate_source` reads)."""
        read = self.registry.read_sources(("pool", "breaker", "cache"))
        series: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        wanted = {
            "scalekit_pool_in_use_connections",
            "scalekit_pool_max_connections",
            "scalekit_pool_waiters",
            "scalekit_pool_timeouts_total",
            "scalekit_breaker_state",
        }
        for m in self.registry.collect():
            if m.name in wanted:
                series[m.name] = {tuple(sorted(x.labels.items())): x.value for x in m.samples}
        pools: dict[tuple[str, str], dict[str, Any]] = {}
        for metric, field_ in (
            ("scalekit_pool_in_use_connections", "in_use"),
            ("scalekit_pool_max_connections", "max_size"),
            ("scalekit_pool_waiters", "waiters"),
            ("scalekit_pool_timeouts_total", "timeouts"),
        ):
            for labels, value in series.get(metric, {}).items():
                d = dict(labels)
                key = (d.get("pool", "?"), d.get("kind", "?"))
                pools.setdefault(key, {"kind": key[1]})[field_] = value
        read += [("pool", name, stats) for (name, _), stats in sorted(pools.items())]
        states: dict[str, list[str]] = {}
        for labels, value in series.get("scalekit_breaker_state", {}).items():
            d = dict(labels)
            if value > 0:
                states.setdefault(d.get("breaker", "?"), []).append(d.get("state", "?"))
        for name, current in sorted(states.items()):
            # breakers sharing a name: the worst state speaks for them
            bad = [st for st in current if st not in ("closed", "disabled")]
            read.append(("breaker", name, {"state": bad[0] if bad else current[0]}))
        return read


def _get(obj: Any, attr: str) -> Any:
    return obj.get(attr) if isinstance(obj, Mapping) else getattr(obj, attr, None)


def _rate_source(rate: Rate, kind: str, name: str, obj: Any) -> Check | None:
    if kind == "pool":
        in_use, max_size = _get(obj, "in_use"), _get(obj, "max_size")
        return _figure(
            rate, f"pool.{name}", float(in_use or 0), float(max_size) if max_size else None,
            unit="connections",
            data={"waiters": _get(obj, "waiters"), "timeouts": _get(obj, "timeouts"),
                  "kind": _get(obj, "kind")},
        )  # fmt: skip
    if kind == "breaker":
        state = str(getattr(_get(obj, "state"), "value", _get(obj, "state")))
        status: Status = "ok" if state in ("closed", "disabled") else "warning"
        return _figure(
            rate, f"breaker.{name}", None, None, status=status, detail=state,
            data={"state": state, "retry_after": _get(obj, "retry_after"),
                  "failure_rate": _get(obj, "failure_rate")},
        )  # fmt: skip
    if kind == "cache":
        hits, misses = float(_get(obj, "hits") or 0), float(_get(obj, "misses") or 0)
        ratio = hits / (hits + misses) if hits + misses else None
        return _figure(
            rate, f"cache.{name}", ratio, None, unit="ratio", status="ok",
            detail="hit ratio" if ratio is not None else "no reads yet",
            data={"hits": hits, "misses": misses, "stale_served": _get(obj, "stale_served")},
        )  # fmt: skip
    return None


# -- running probes ---------------------------------------------------------------------

_ORPHANS: set[asyncio.Task[Any]] = set()


def _reap(task: asyncio.Task[Any]) -> None:
    _ORPHANS.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" warning


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _bounded(probe: Probe, rate: Rate) -> list[Check]:
    task = asyncio.ensure_future(probe.run(rate))
    try:
        done, _ = await asyncio.wait({task}, timeout=probe.timeout)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()  # left to unwind on its own: the report does not wait for it
        _ORPHANS.add(task)
        task.add_done_callback(_reap)
        return [Check(probe.name, "critical", error=f"did not answer within {probe.timeout:g} s")]
    if task.cancelled():
        return [Check(probe.name, "critical", error="cancelled")]
    exc = task.exception()
    if exc is not None:
        return [Check(probe.name, "critical", error=_describe(exc))]
    checks: list[Check] = task.result()
    return checks


def _rater(thresholds: Mapping[str, Thresholds] | None) -> Rate:
    table = dict(thresholds or {})
    for k, v in table.items():
        if not isinstance(k, str) or not isinstance(v, Thresholds):
            raise ConfigurationError(
                f"thresholds maps a check name (or a prefix: 'postgres', 'pool') to "
                f"Thresholds, got {k!r}: {v!r}"
            )
    default = table.get("", Thresholds())

    def rate(name: str) -> Thresholds:
        while name:
            found = table.get(name)
            if found is not None:
                return found
            name = name.rpartition(".")[0]
        return default

    return rate


async def health_report(
    *probes: Probe,
    registry: Registry | None = None,
    thresholds: Mapping[str, Thresholds] | None = None,
) -> HealthReport:
    """Run ``probes`` concurrently, each within its own timeout, and rate what they
    found. Unless a :class:`RegistryProbe` is among them, one is added over
    ``registry`` (the default registry): the pools, breakers and caches registered
    there as sources.

    ``thresholds`` maps a check name or a prefix of one (``"postgres.connections"``,
    ``"postgres"``, ``"pool"``, ``""`` for every check) to :class:`Thresholds`; the
    default is warning at 75 %, critical at 90 %.
    """
    rate = _rater(thresholds)
    chosen: list[Probe] = list(probes)
    for p in chosen:
        if not (hasattr(p, "run") and hasattr(p, "name") and hasattr(p, "timeout")):
            raise ConfigurationError(f"not a probe: {p!r}")
    if not any(isinstance(p, RegistryProbe) for p in chosen):
        chosen.append(RegistryProbe(registry))
    names = [p.name for p in chosen]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"probe names must be unique, got {names}")
    began = time.perf_counter()
    at = time.time()
    results: Sequence[list[Check]] = await asyncio.gather(*(_bounded(p, rate) for p in chosen))
    checks = tuple(c for group in results for c in group)
    status: Status = max((c.status for c in checks), key=_ORDER.__getitem__, default="ok")
    return HealthReport(
        status=status,
        ready=not any(c.error for c in checks),
        checks=checks,
        generated_at=at,
        duration_seconds=time.perf_counter() - began,
    )

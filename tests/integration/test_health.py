"""health_report and the ASGI apps on the suite's real PostgreSQL and Redis, including a
SIGSTOPped Redis and servers that are gone."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import redis
from servers import RedisServer, free_port

from scalekit.errors import ConfigurationError
from scalekit.observability import (
    Check,
    PostgresProbe,
    RedisProbe,
    Registry,
    RegistryProbe,
    Thresholds,
    health_app,
    health_report,
    metrics_app,
)
from scalekit.observability._health import _ORPHANS
from scalekit.pools import PoolStats
from scalekit.resilience import CircuitBreaker


async def drain_orphans() -> None:
    """Probes cancelled at their timeout unwind on their own; let them finish."""
    await asyncio.gather(*list(_ORPHANS), return_exceptions=True)


@pytest.fixture
async def pg(postgres_dsn: str) -> AsyncIterator[Any]:
    conn = await asyncpg.connect(postgres_dsn)
    try:
        yield conn
    finally:
        await conn.close()


# -- PostgreSQL ------------------------------------------------------------------------


@pytest.mark.postgres
async def test_postgres_figures(postgres_dsn: str, pg: Any) -> None:
    t = f"health_{uuid.uuid4().hex[:8]}"
    await pg.execute(f"CREATE TABLE {t}_big (id int, pad text)")
    await pg.execute(
        f"INSERT INTO {t}_big SELECT g, repeat('x', 500) FROM generate_series(1, 4000) g"
    )
    await pg.execute(f"CREATE TABLE {t}_p (day date, v int) PARTITION BY RANGE (day)")
    await pg.execute(
        f"CREATE TABLE {t}_p_2026 PARTITION OF {t}_p "
        "FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')"
    )
    await pg.execute(f'CREATE TABLE "{t}_p_Def" PARTITION OF {t}_p DEFAULT')
    await pg.execute(
        f"INSERT INTO {t}_p VALUES ('2026-05-01', 1), ('2031-01-01', 2), ('2032-01-01', 3)"
    )
    holder = await asyncpg.connect(postgres_dsn)
    tx = holder.transaction()
    await tx.start()
    await holder.execute("SELECT 1")  # an open transaction, idle in transaction
    try:
        probe = PostgresProbe(
            postgres_dsn, timeout=5, largest_tables=50, database_size_limit=1.0,
            max_transaction_age=1e-6,
        )  # fmt: skip
        report = await health_report(probe, registry=Registry())
    finally:
        await tx.rollback()
        await holder.close()
    assert report.ready
    size = report.check("postgres.database_size")
    assert size.value is not None and size.value > 2_000_000
    assert size.status == "critical"  # a 1-byte quota
    tables = {r["name"]: r["bytes"] for r in size.data["largest_tables"]}
    assert tables[f"{t}_big"] > 2_000_000
    conns = report.check("postgres.connections")
    max_connections = int(await pg.fetchval("SHOW max_connections"))
    assert conns.limit == max_connections
    assert conns.value is not None and 2 <= conns.value <= max_connections
    oldest = report.check("postgres.oldest_transaction")
    assert oldest.value is not None and oldest.value > 0
    assert oldest.status == "critical"
    parts = report.check("postgres.default_partitions")
    assert parts.value == 2 and parts.status == "warning"
    assert {"partition": f"public.{t}_p_Def", "parent": f"{t}_p", "rows": 2} in parts.data[
        "partitions"
    ]
    with pytest.raises(KeyError):  # no replication on the test server: no lag figure
        report.check("postgres.replication_lag")
    assert report.status == "critical"
    json.loads(report.to_json())  # JSON-serialisable, NaN-free
    await pg.execute(f"DROP TABLE {t}_big, {t}_p")


@pytest.mark.postgres
async def test_postgres_defaults_are_ok_on_an_idle_server(postgres_dsn: str) -> None:
    report = await health_report(PostgresProbe(postgres_dsn, timeout=5), registry=Registry())
    assert report.check("postgres.database_size").status == "ok"  # no quota given: reported
    assert report.check("postgres.connections").status == "ok"
    assert report.ready


# -- Redis -------------------------------------------------------------------------------


@pytest.mark.redis
async def test_redis_figures_and_thresholds(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    try:
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", str(used * 2))
        client.config_set("maxclients", "50")
    finally:
        client.close()
    probe = RedisProbe(redis_server.url)
    report = await health_report(probe, registry=Registry())
    mem = report.check("redis.memory")
    assert mem.limit == used * 2
    assert mem.ratio is not None and 0.3 < mem.ratio < 0.75
    assert mem.status == "ok"
    clients = report.check("redis.clients")
    assert clients.limit == 50 and clients.value is not None and clients.value >= 1
    assert report.check("redis.evictions").value == 0
    strict = await health_report(
        probe, registry=Registry(), thresholds={"redis.memory": Thresholds(0.2, 0.3)}
    )
    assert strict.check("redis.memory").status == "critical"
    assert strict.check("redis.clients").status == "ok"  # the override is for memory only
    everything = await health_report(
        probe, registry=Registry(), thresholds={"redis": Thresholds(0.01, 0.02)}
    )
    assert everything.check("redis.clients").status == "critical"


@pytest.mark.redis
@pytest.mark.postgres
async def test_a_sigstopped_redis_times_out_without_holding_up_the_report(
    redis_server: RedisServer, postgres_dsn: str
) -> None:
    assert redis_server.process is not None
    pid = redis_server.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        began = time.perf_counter()
        report = await health_report(
            RedisProbe(redis_server.url, timeout=0.5),
            PostgresProbe(postgres_dsn, timeout=5),
            registry=Registry(),
        )
        took = time.perf_counter() - began
    finally:
        os.kill(pid, signal.SIGCONT)
    await drain_orphans()
    assert took < 2.0  # the Redis probe's 0.5 s, and PostgreSQL answering meanwhile
    failed = report.check("redis")
    assert failed.status == "critical"
    assert failed.error == "did not answer within 0.5 s" or "Timeout" in str(failed.error)
    assert not report.ready and report.status == "critical"
    assert report.check("postgres.connections").error is None  # not blocked by Redis


@pytest.mark.redis
async def test_servers_that_are_gone_are_reported_not_raised(redis_server: RedisServer) -> None:
    redis_server.stop(kill=True)
    dead_pg = f"postgresql://nobody@127.0.0.1:{free_port()}/nothing"
    began = time.perf_counter()
    report = await health_report(
        RedisProbe(redis_server.url, timeout=1),
        PostgresProbe(dead_pg, timeout=1),
        registry=Registry(),
    )
    assert time.perf_counter() - began < 2.0
    await drain_orphans()
    assert {c.name for c in report.checks} == {"redis", "postgres"}
    for c in report.checks:
        assert c.status == "critical" and c.error, c
    assert not report.ready
    json.loads(report.to_json())


# -- probes of any kind, the registry probe, thresholds ----------------------------------


class Hangs:
    name = "hangs"
    timeout = 0.2

    def __init__(self) -> None:
        self.cancelled = False

    async def run(self, rate: Any) -> list[Check]:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return []


class Raises:
    name = "raises"
    timeout = 5.0

    async def run(self, rate: Any) -> list[Check]:
        raise RuntimeError("probe broke")


async def test_a_hanging_or_raising_probe_is_one_critical_check() -> None:
    hangs = Hangs()
    began = time.perf_counter()
    report = await health_report(hangs, Raises(), registry=Registry())
    assert time.perf_counter() - began < 1.0
    await drain_orphans()
    assert hangs.cancelled
    assert report.check("hangs").error == "did not answer within 0.2 s"
    assert report.check("raises").error == "RuntimeError: probe broke"
    assert not report.ready


async def test_registry_probe_rates_pools_breakers_and_caches() -> None:
    from scalekit.cache import Cache

    r = Registry()
    pool = PoolStats(
        name="db", kind="postgres", max_size=10, size=10, idle=1, in_use=9, waiters=3,
        acquired=70, timeouts=2, wait_seconds_total=1.0, wait_seconds_max=0.5,
        recycled=0, ping_failures=0, retries=0,
    )  # fmt: skip
    breaker = CircuitBreaker("payments", record=ConnectionError)
    breaker.open()
    cache = Cache(name="feed")
    for _ in range(3):
        cache.get_or_load("k", lambda: 1)
    r.register_source("pool", lambda: [pool])
    r.register_source("breaker", breaker.snapshot)
    r.register_source("cache", cache.stats)
    report = await health_report(registry=r)
    assert report.check("pool.db").status == "critical"  # 9 of 10
    assert report.check("pool.db").data["waiters"] == 3
    assert report.check("breaker.payments").status == "warning"
    assert report.check("breaker.payments").detail == "forced_open"
    feed = report.check("cache.feed")
    assert feed.value == pytest.approx(2 / 3) and feed.status == "ok"
    relaxed = await health_report(RegistryProbe(r), thresholds={"pool.db": Thresholds(0.95, 0.99)})
    assert relaxed.check("pool.db").status == "ok"
    assert report.ready and report.status == "critical"


def test_arguments_are_validated() -> None:
    for bad in ((0.9, 0.8), (0, 0.5), (0.5, float("nan")), (True, 0.5)):
        with pytest.raises(ConfigurationError):
            Thresholds(*bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        PostgresProbe("postgresql://x", timeout=0)
    with pytest.raises(ConfigurationError):
        RedisProbe("redis://x", name="a.b")
    with pytest.raises(ConfigurationError):
        asyncio.run(health_report(RedisProbe("redis://x"), RedisProbe("redis://y")))
    with pytest.raises(ConfigurationError):
        asyncio.run(health_report(thresholds={"redis": 0.5}))  # type: ignore[dict-item]


# -- ASGI --------------------------------------------------------------------------------


async def call(
    app: Any, path: str, *, root_path: str = "", method: str = "GET"
) -> tuple[int, bytes, dict[bytes, bytes]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": root_path + path, "root_path": root_path}
    await app(scope, receive, send)
    start, body = sent
    return start["status"], body["body"], dict(start["headers"])


@pytest.mark.redis
async def test_health_app_live_ready_and_report(redis_url: str, redis_server: RedisServer) -> None:
    good = health_app(RedisProbe(redis_url), registry=Registry())
    assert (await call(good, "/live", root_path="/health"))[0] == 200
    status, body, headers = await call(good, "/ready", root_path="/health")
    assert status == 200 and json.loads(body) == {"ready": True, "failed": []}
    status, body, headers = await call(good, "", root_path="/health")
    assert status == 200 and headers[b"content-type"] == b"application/json"
    assert json.loads(body)["checks"][0]["name"] == "redis.memory"
    assert (await call(good, "/nope"))[0] == 404
    assert (await call(good, "/ready", method="POST"))[0] == 405
    redis_server.stop(kill=True)
    bad = health_app(
        RedisProbe(redis_url), RedisProbe(redis_server.url, name="gone"), registry=Registry()
    )
    assert (await call(bad, "/live"))[0] == 200  # liveness runs no probe
    status, body, _ = await call(bad, "/ready/")
    assert status == 503 and json.loads(body) == {"ready": False, "failed": ["gone"]}
    status, body, _ = await call(bad, "/")
    assert status == 503 and json.loads(body)["status"] == "critical"


async def test_metrics_app_serves_the_exposition() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    r = Registry()
    r.counter("scalekit_cache_hits_total", "Hits.", labels=("cache",)).labels("feed").add(3)
    status, body, headers = await call(metrics_app(r), "/metrics")
    assert status == 200 and headers[b"content-type"].startswith(b"text/plain")
    [fam] = list(text_string_to_metric_families(body.decode()))
    assert fam.samples[0].value == 3
    status, body, _ = await call(metrics_app(r), "/metrics", method="HEAD")
    assert status == 200 and body == b""


@pytest.mark.postgres
async def test_postgres_probe_through_pgbouncer(pgbouncer_dsn: str) -> None:
    report = await health_report(PostgresProbe(pgbouncer_dsn, timeout=5), registry=Registry())
    assert report.ready, report.checks
    conns = report.check("postgres.connections")
    assert conns.value is not None and conns.limit is not None and conns.value >= 1


class Counts:
    name = "counts"
    timeout = 5.0

    def __init__(self) -> None:
        self.runs = 0
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def run(self, rate: Any) -> list[Check]:
        self.runs += 1
        self.started.set()
        await self.release.wait()
        return [Check("counts.x", "ok", 1.0)]


async def test_health_app_shares_one_run_between_concurrent_requests() -> None:
    probe = Counts()
    uncached = health_app(probe, registry=Registry(), cache_seconds=0)
    calls = [asyncio.ensure_future(call(uncached, "/ready")) for _ in range(20)]
    await probe.started.wait()  # every request has joined the run in flight by now
    probe.release.set()
    results = await asyncio.gather(*calls)
    assert {status for status, _, _ in results} == {200}
    assert probe.runs == 1
    await call(uncached, "/")
    assert probe.runs == 2  # finished, and cache_seconds=0: a new run
    cached = health_app(probe, registry=Registry(), cache_seconds=60)
    await call(cached, "/")
    await call(cached, "/ready")
    assert probe.runs == 3  # younger than cache_seconds: served again
    with pytest.raises(ConfigurationError):
        health_app(probe, cache_seconds=float("inf"))


class Flips:
    name = "flips"
    timeout = 1.0

    def __init__(self) -> None:
        self.fail = False

    async def run(self, rate: Any) -> list[Check]:
        if self.fail:
            raise ConnectionError("down")
        return [Check("flips.x", "ok", 1.0)]


async def test_health_app_logs_a_change_once(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="scalekit.events")
    probe = Flips()
    app = health_app(probe, registry=Registry(), cache_seconds=0)
    await call(app, "/ready")
    probe.fail = True
    for _ in range(3):
        assert (await call(app, "/ready"))[0] == 503
    probe.fail = False
    assert (await call(app, "/ready"))[0] == 200
    events = [(r.event, r.status, r.ready) for r in caplog.records]  # type: ignore[attr-defined]
    assert events == [("health.changed", "critical", False), ("health.changed", "ok", True)]

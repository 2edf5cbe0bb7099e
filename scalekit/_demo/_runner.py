"""Seed once, then drive every service twice (primitives off, then on), reading the counts.

Each service runs in-process: its FastAPI app's lifespan is entered and an
``httpx.AsyncClient`` on ``httpx.ASGITransport`` talks to it (no ports). Around each
service run the demo takes a snapshot of what PostgreSQL counted for the phase's
database (:mod:`._postgres`) and of scalekit's own metrics registry (cache hits and
misses, limiter denials), so every figure is a difference between two readings of a
counter someone else keeps.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from scalekit._demo._postgres import Counts, DemoDatabases
from scalekit._demo._services import Service, common_module

__all__ = ["PHASES", "Population", "RunOptions", "ServiceRun", "run_phases"]

#: (key, label, ServiceConfig.primitives)
PHASES: tuple[tuple[str, str, bool], ...] = (
    ("off", "primitives off", False),
    ("on", "primitives on", True),
)

#: metric families of scalekit's registry the report reads (summed over their series)
_REGISTRY_FIGURES = {
    "cache_hits": ("scalekit_cache_hits_total", "scalekit_cache_stale_served_total"),
    "cache_misses": ("scalekit_cache_misses_total",),
    "ratelimit_denied": ("scalekit_ratelimit_denied_total",),
}


@dataclass(frozen=True, slots=True)
class RunOptions:
    users: int
    requests: int
    seed: int
    active_share: float = 0.4
    redis_url: str | None = None


@dataclass(frozen=True, slots=True)
class Population:
    """The synthetic users: everyone seeded, the share active at peak, the paid ones."""

    users: int
    active: list[int]
    paid: set[int]


@dataclass(slots=True)
class ServiceRun:
    """One service in one phase: what its workload saw and what the counters say."""

    service: str
    phase: str
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    figures: dict[str, float] = field(default_factory=dict)
    db: Counts = field(default_factory=lambda: Counts(0, 0, 0))
    registry: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


Tick = Callable[[str, str, int], None]
"""``tick(phase, service, n)``: ``n`` more requests answered (for a progress bar)."""


def _registry_totals() -> dict[str, float]:
    from scalekit.observability import default_registry

    wanted = {name for names in _REGISTRY_FIGURES.values() for name in names}
    sums = dict.fromkeys(wanted, 0.0)
    for metric in default_registry.collect():
        if metric.name in wanted:
            sums[metric.name] += sum(s.value for s in metric.samples)
    return {key: sum(sums[n] for n in names) for key, names in _REGISTRY_FIGURES.items()}


async def seed(
    dbs: DemoDatabases, services: list[Service], options: RunOptions
) -> tuple[str, Population]:
    """Create the template database (shared schema, every service's install and seed);
    its name and the population it holds."""
    import asyncpg

    name = await dbs.create("seed")
    conn = await asyncpg.connect(dbs.dsn(name))
    try:
        await common_module().apply_schema(conn)
        for svc in services:
            await svc.module.install(conn)
        for svc in services:  # chat first: it fills the shared tables
            await svc.module.seed(conn, users=options.users, seed=options.seed)
        rows = await conn.fetch("SELECT id, tier FROM users ORDER BY id")
    finally:
        await conn.close()
    await dbs.prepare_template(name)
    ids = [int(r["id"]) for r in rows]
    rng = random.Random(options.seed)
    active = sorted(rng.sample(ids, max(1, round(len(ids) * options.active_share)))) if ids else []
    paid = {int(r["id"]) for r in rows if r["tier"] == "paid"}
    return name, Population(len(ids), active, paid)


def _counting_client(app: Any, on_response: Callable[[], None]) -> Any:
    import httpx

    class CountingTransport(httpx.ASGITransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await super().handle_async_request(request)
            on_response()
            return response

    return httpx.AsyncClient(transport=CountingTransport(app=app), base_url="http://svc")


async def _run_service(
    svc: Service,
    phase: str,
    primitives: bool,
    dsn: str,
    population: Population,
    options: RunOptions,
    tick: Tick,
) -> ServiceRun:
    common = common_module()
    wiring = svc.wiring()
    config = common.ServiceConfig(
        database_url=dsn, redis_url=options.redis_url, primitives=primitives, **wiring.config
    )
    app = svc.module.create_app(config, **wiring.app)
    began = time.perf_counter()
    async with app.router.lifespan_context(app):
        registry_before = _registry_totals()
        async with _counting_client(app, lambda: tick(phase, svc.name, 1)) as client:
            result = await svc.module.run_workload(
                client,
                user_ids=list(population.active),
                paid_ids=set(population.paid),
                requests=options.requests,
                seed=options.seed,
                **wiring.workload,
            )
        registry_after = _registry_totals()
    run = ServiceRun(svc.name, phase)
    run.seconds = time.perf_counter() - began
    run.latencies_ms = [float(x) for x in result.latencies_ms]
    run.statuses = Counter({int(k): int(v) for k, v in result.statuses.items()})
    run.figures = {str(k): float(v) for k, v in result.figures.items()}
    run.registry = {k: registry_after[k] - registry_before[k] for k in registry_after}
    return run


async def _flush_redis(url: str) -> None:
    import redis.asyncio

    client: Any = redis.asyncio.Redis.from_url(url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


async def run_phases(
    dbs: DemoDatabases,
    services: list[Service],
    options: RunOptions,
    population: Population,
    template: str,
    tick: Tick,
    timings: dict[str, float],
) -> list[ServiceRun]:
    """Every service in every phase, each phase on its own copy of the seeded template
    (the last one on the template itself), so both start from the same data."""
    runs: list[ServiceRun] = []
    for phase, _label, primitives in PHASES:
        if options.redis_url is not None:
            await _flush_redis(options.redis_url)  # each phase's limits start empty
        if phase == PHASES[-1][0]:
            name = template  # the last phase runs on the template itself: one copy fewer
        else:
            t = time.perf_counter()
            name = await dbs.create(phase, template=template)
            timings[f"clone_{phase}_seconds"] = time.perf_counter() - t
        dsn = dbs.dsn(name)
        t = time.perf_counter()
        before = await dbs.snapshot(name)
        timings["snapshot_seconds"] = timings.get("snapshot_seconds", 0.0) + time.perf_counter() - t
        for svc in services:
            run = await _run_service(svc, phase, primitives, dsn, population, options, tick)
            t = time.perf_counter()
            after = await dbs.snapshot(name)
            timings["snapshot_seconds"] += time.perf_counter() - t
            run.db = after.since(before)
            before = after
            runs.append(run)
    return runs

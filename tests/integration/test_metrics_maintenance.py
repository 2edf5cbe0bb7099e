"""Maintenance job progress in the metrics registry, on the real PostgreSQL (issue 14)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from scalekit.maintenance import Retention, Runner
from scalekit.observability import default_registry
from scalekit.pools import PgPool, PoolSettings

pytestmark = pytest.mark.postgres


def series(name: str) -> dict[tuple[str, ...], float]:
    for m in default_registry.collect():
        if m.name == name:
            return {tuple(s.labels[n] for n in m.labelnames): s.value for s in m.samples}
    return {}


@pytest.fixture
async def pool(postgres_dsn: str) -> AsyncIterator[PgPool]:
    async with PgPool(PoolSettings(url=postgres_dsn, max_size=4)) as p:
        yield p


async def test_retention_progress_batch_by_batch_and_runs_by_outcome(pool: PgPool) -> None:
    schema = f"sk_mm_{uuid.uuid4().hex[:10]}"
    t = f"{schema}.logs"
    await pool.execute(f"CREATE SCHEMA {schema}")
    try:
        await pool.execute(f"""
            CREATE TABLE {t} (id bigint PRIMARY KEY, at timestamptz NOT NULL);
            CREATE INDEX ON {t} (at, id);
            INSERT INTO {t} SELECT i, now() - interval '30 days' FROM generate_series(1, 1000) i;
        """)
        job = Retention(t, "at", keep=timedelta(days=7), batch_size=300, pause=0)
        name = f"metrics-{uuid.uuid4().hex[:8]}"
        runner = Runner(job, 60, pool=pool, name=name)
        assert await runner.run_once() is True
        label = (job.job_name,)
        assert series("scalekit_maintenance_rows_total")[label] == 1000
        assert series("scalekit_maintenance_batches_total")[label] == 4  # 300, 300, 300, 100
        (m,) = [
            m for m in default_registry.collect() if m.name == "scalekit_maintenance_batch_seconds"
        ]
        (s,) = [s for s in m.samples if s.labels["job"] == job.job_name]
        assert s.count == 5  # every batch transaction is timed, the last, empty one too
        assert series("scalekit_maintenance_runs_total")[(name, "done")] == 1

        # another worker holds the lock: the round is skipped, and counted so
        async with pool.acquire() as con:
            assert await con.fetchval("SELECT pg_try_advisory_lock($1)", runner.key)
            try:
                assert await runner.run_once() is False
            finally:
                await con.execute("SELECT pg_advisory_unlock($1)", runner.key)
        assert series("scalekit_maintenance_runs_total")[(name, "skipped")] == 1
        st = runner.stats()
        assert (st.runs, st.skipped, st.failures, st.rows) == (1, 1, 0, 1000)
    finally:
        await pool.execute(f"DROP SCHEMA {schema} CASCADE")

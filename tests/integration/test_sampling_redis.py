"""Sampling budgets on real Redis: a fleet of processes, server time, a cluster, outages."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
from typing import Any

import pytest
import redis

from scalekit import RedisBackend
from scalekit.sampling import Budget, Cap, Pipeline
from scalekit.testing import FakeClock

pytestmark = pytest.mark.redis

PROCESSES = 4
ATTEMPTS = 60
TARGET = 100


def _worker(url: str, barrier: Any, results: Any, worker: int) -> None:
    backend = RedisBackend(url, socket_timeout=10.0, connect_timeout=10.0)
    pipe = Pipeline(
        Budget(f"{TARGET}/day", backend=backend, rng=lambda: 0.0, name="fleet"),
        Cap("40/day", key=lambda m: m, backend=backend, name="per-user"),
    )
    barrier.wait()
    if worker % 2:

        async def run() -> int:
            got = await asyncio.gather(*(pipe.adecide(f"user{worker}") for _ in range(ATTEMPTS)))
            return sum(d.sampled for d in got)

        results.put((worker, asyncio.run(run())))
    else:
        results.put((worker, sum(pipe.decide(f"user{worker}").sampled for _ in range(ATTEMPTS))))


@pytest.mark.slow
def test_a_fleet_of_processes_shares_one_budget(fresh_redis_url: str) -> None:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(fresh_redis_url, barrier, results, i))
        for i in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    counts = dict(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    # 240 attempts, each user capped at 40 by the rate limiter, 100 in all by the budget.
    # Never more than the target. An item the cap refuses holds a budget unit for the
    # moment between the budget's script and its refund; another process asking in
    # that moment, near the target, is refused: at most one unit per process.
    total = sum(counts.values())
    assert TARGET - PROCESSES <= total <= TARGET, counts
    assert all(c <= 40 for c in counts.values()), counts


def test_budget_windows_follow_redis_server_time(fresh_redis_url: str) -> None:
    b = Budget("10/hour", backend=fresh_redis_url, rng=lambda: 0.0)
    d = Pipeline(b).decide(None)
    assert d.sampled
    client = redis.Redis.from_url(fresh_redis_url)
    (key,) = client.keys("scalekit:sb:*")
    idx, considered, sampled, previous = client.get(key).split()
    secs, _ = client.time()
    assert int(float(idx)) == secs // 3600 and (considered, sampled, previous) == (
        b"1",
        b"1",
        b"-1",
    )
    assert 3600 < client.pttl(key) / 1000 <= 7200


@pytest.mark.cluster
async def test_per_key_budgets_on_a_cluster(redis_cluster_url: str) -> None:
    pipe = Pipeline(Budget("2/hour", per=lambda m: m, backend=redis_cluster_url, rng=lambda: 0.0))
    for user in (f"user:{i}" for i in range(20)):  # spread over the three masters
        got = [(await pipe.adecide(user)).sampled for _ in range(3)]
        assert got == [True, True, False], user
        assert [pipe.decide(user).sampled] == [False]


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["fail_closed", "local_fallback"])
def test_redis_outage_follows_the_budget_policy_and_recovers(
    redis_server: Any, policy: str
) -> None:
    clock = FakeClock()  # drives the cooldown; the script uses Redis TIME
    b = Budget(
        "10/hour",
        backend=redis_server.url,
        rng=lambda: 0.0,
        on_backend_error=policy,  # type: ignore[arg-type]
        fallback_instances=2,
        backend_cooldown=3.0,
        clock=clock,
    )
    pipe = Pipeline(b)
    assert [pipe.decide(i).sampled for i in range(3)] == [True] * 3
    redis_server.stop(kill=True)
    decisions = [pipe.decide(i) for i in range(8)]
    assert b._guard.errors == 1 and b._guard.episodes == 1, "one failure, then the cooldown"
    assert b.degraded == 8
    if policy == "fail_closed":
        assert not any(decisions)
        assert "backend unavailable" in decisions[0].detail
    else:  # 10/hour over 2 instances: 5 locally
        assert [d.sampled for d in decisions] == [True] * 5 + [False] * 3
        assert "local budget" in decisions[0].detail
    redis_server.restart()
    clock.advance(3.0)
    d = pipe.decide(0)
    assert d.sampled and b._guard.errors == 1
    assert d.detail == "1/10 sampled of 1 considered this window"  # restarted empty

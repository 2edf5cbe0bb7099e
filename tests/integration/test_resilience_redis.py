"""Shared breakers on a real Redis: 8 processes, Redis TIME, an outage."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
from typing import Any

import pytest
import redis

from scalekit import RedisBackend
from scalekit.errors import CircuitOpenError
from scalekit.resilience import CircuitBreaker, State
from scalekit.resilience._shared import SharedState
from scalekit.testing import FakeClock

pytestmark = pytest.mark.redis

PROCESSES = 8
NAME = "fleet-probe"


class Boom(Exception):
    pass


def _breaker(url: str) -> CircuitBreaker:
    # generous socket timeouts: a loaded 2-core box must not turn a slow reply into
    # an outage (which would let the local breaker decide)
    backend = RedisBackend(url, socket_timeout=10.0, connect_timeout=10.0)
    return CircuitBreaker(
        NAME,
        record=Boom,
        failure_threshold=1,
        open_duration=1.0,
        max_open_duration=120.0,
        backoff_multiplier=1000.0,  # after the failed probe: open for 120 s
        shared=SharedState(backend, on_backend_error="fail_closed"),
    )


def _worker(url: str, barrier: Any, results: Any, worker: int) -> None:
    breaker = _breaker(url)
    client = redis.Redis.from_url(url)

    def dep() -> None:
        client.incr("dependency-hits")
        raise Boom("still down")

    async def adep() -> None:
        dep()

    counts = {"rejected": 0, "failed": 0}
    barrier.wait()  # the breaker was tripped before the barrier opened
    until = time.monotonic() + 3.0  # the open period (1 s) ends in the middle
    if worker % 2:
        wrapped = breaker(adep)

        async def run() -> None:
            while time.monotonic() < until:
                try:
                    await wrapped()
                except CircuitOpenError:
                    counts["rejected"] += 1
                except Boom:
                    counts["failed"] += 1
                await asyncio.sleep(0.005)

        asyncio.run(run())
    else:
        swrapped = breaker(dep)
        while time.monotonic() < until:
            try:
                swrapped()
            except CircuitOpenError:
                counts["rejected"] += 1
            except Boom:
                counts["failed"] += 1
            time.sleep(0.005)
    results.put(counts)


@pytest.mark.slow
def test_eight_processes_send_exactly_one_probe(fresh_redis_url: str) -> None:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES + 1)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(fresh_redis_url, barrier, results, i))
        for i in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    breaker = _breaker(fresh_redis_url)
    with pytest.raises(Boom):
        breaker(lambda: (_ for _ in ()).throw(Boom("first failure")))()
    assert breaker.state is State.OPEN
    barrier.wait(timeout=120)
    totals = {"rejected": 0, "failed": 0}
    for _ in procs:
        for k, v in results.get(timeout=120).items():
            totals[k] += v
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    client = redis.Redis.from_url(fresh_redis_url)
    assert int(client.get("dependency-hits") or 0) == 1  # exactly one probe, fleet-wide
    assert totals["failed"] == 1
    assert totals["rejected"] > PROCESSES  # everyone else was refused, repeatedly
    assert breaker._shared is not None and breaker._shared.refresh() is State.OPEN


def test_scripts_use_redis_server_time(fresh_redis_url: str) -> None:
    breaker = CircuitBreaker(
        "server-time", record=Boom, failure_threshold=1, open_duration=30, shared=fresh_redis_url
    )
    with pytest.raises(Boom):
        breaker(lambda: (_ for _ in ()).throw(Boom()))()
    client = redis.Redis.from_url(fresh_redis_url)
    secs, micros = client.time()
    server_now = secs + micros / 1e6
    keys = [k.decode() for k in client.keys("scalekit:cb:*")]
    assert keys and all("{server-time}" in k for k in keys)  # one hash tag per breaker
    state_key = next(k for k in keys if k.endswith(":s"))
    until = float(client.hget(state_key, "until") or 0)
    assert server_now < until <= server_now + 30.0 + 0.5  # Redis TIME, not our monotonic clock
    assert 0 < client.pttl(state_key) <= 86_400_000  # every key expires


@pytest.mark.parametrize("policy", ["local_fallback", "fail_closed", "fail_open"])
def test_redis_outage_follows_the_policy_and_recovers(redis_server: Any, policy: str) -> None:
    clock = FakeClock()  # drives the cooldown and the local breaker
    breaker = CircuitBreaker(
        "outage",
        record=Boom,
        failure_threshold=3,
        open_duration=10,
        clock=clock,
        shared=SharedState(
            redis_server.url,
            on_backend_error=policy,  # type: ignore[arg-type]
            backend_cooldown=5.0,
        ),
    )
    hits = 0

    @breaker
    def dep(fail: bool) -> str:
        nonlocal hits
        hits += 1
        if fail:
            raise Boom
        return "ok"

    assert dep(False) == "ok"
    redis_server.stop(kill=True)
    outcomes = []
    began = time.perf_counter()
    for _ in range(6):
        try:
            dep(True)
            outcomes.append("ok")
        except Boom:
            outcomes.append("failed")
        except CircuitOpenError:
            outcomes.append("rejected")
    elapsed = time.perf_counter() - began
    assert elapsed < 2.0  # one socket timeout, then no network until the cooldown ends
    if policy == "local_fallback":
        # the first failure's report hit the outage; then the local breaker counts:
        # three more failures trip it
        assert outcomes == ["failed"] * 4 + ["rejected"] * 2
    elif policy == "fail_closed":
        assert outcomes == ["failed"] + ["rejected"] * 5
    else:
        assert outcomes == ["failed"] * 6
    redis_server.restart()
    clock.advance(10)
    assert dep(False) == "ok"  # Redis answers again: the fleet state (closed) rules
    assert breaker._shared is not None and breaker._shared.refresh() is State.CLOSED


@pytest.mark.cluster
async def test_shared_breaker_on_a_cluster(redis_cluster_url: str) -> None:
    clock = FakeClock()  # only counts down the cached retry_after; deadlines use TIME
    breakers = [
        CircuitBreaker(
            "cluster-dep", record=Boom, failure_threshold=2, open_duration=0.2,
            max_open_duration=60, backoff_multiplier=300,
            shared=SharedState(redis_cluster_url), clock=clock,
        )
        for _ in range(2)
    ]  # fmt: skip
    hits = 0

    async def fail() -> None:
        nonlocal hits
        hits += 1
        raise Boom

    f0, f1 = (b(fail) for b in breakers)
    for f in (f0, f1):
        with pytest.raises(Boom):
            await f()
    assert breakers[1].state is State.OPEN  # two failures from two "processes"
    with pytest.raises(Boom):
        await f0()  # its view was still closed: this outcome brings the news
    assert breakers[0].state is State.OPEN
    with pytest.raises(CircuitOpenError):
        await f0()
    await asyncio.sleep(0.25)  # Redis TIME has to pass the 0.2 s open period
    clock.advance(1)  # and the cached views have to expire
    with pytest.raises(Boom):
        await f1()  # the fleet's probe
    with pytest.raises(CircuitOpenError) as info:
        await f0()
    assert info.value.retry_after > 30  # reopened with backoff
    assert hits == 4

"""Rate limiting on real Redis servers: many processes, server time, a cluster, faults."""

from __future__ import annotations

import asyncio
import math
import multiprocessing as mp
import os
import signal
import time
from typing import Any

import pytest
import redis

from scalekit import RateLimiter, RedisBackend
from scalekit.ratelimit import ALGORITHMS, ConcurrencyLimiter
from scalekit.testing import FakeClock

pytestmark = pytest.mark.redis

PROCESSES = 8
ATTEMPTS_PER_PROCESS = 40
LIMIT = 100


def _hammer(url: str, prefix: str, barrier: Any, results: Any, worker: int) -> None:
    """One of the processes: wait for the others, then hit the same key per algorithm."""
    counts: dict[str, int] = {}
    use_async = worker % 2 == 1
    # Generous timeouts and fail_closed: an overloaded 2-core box must not turn a
    # slow connect into a fail-open allow, which would hide a real over-admission.
    backend = RedisBackend(url, socket_timeout=10.0, connect_timeout=10.0)
    limiters = {
        a: RateLimiter(
            backend, f"{LIMIT}/hour", algorithm=a, prefix=prefix, on_backend_error="fail_closed"
        )
        for a in ALGORITHMS
    }
    barrier.wait()
    if use_async:

        async def run() -> None:
            for a, lim in limiters.items():
                got = await asyncio.gather(
                    *(lim.ahit("hot-key") for _ in range(ATTEMPTS_PER_PROCESS))
                )
                counts[a] = sum(d.allowed for d in got)

        asyncio.run(run())
    else:
        for a, lim in limiters.items():
            counts[a] = sum(lim.hit("hot-key").allowed for _ in range(ATTEMPTS_PER_PROCESS))
    results.put(counts)


@pytest.mark.slow
def test_eight_processes_never_exceed_the_limit_together(fresh_redis_url: str) -> None:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_hammer, args=(fresh_redis_url, "dist", barrier, results, i))
        for i in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    totals = dict.fromkeys(ALGORITHMS, 0)
    for _ in procs:
        for a, n in results.get(timeout=120).items():
            totals[a] += n
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert PROCESSES * ATTEMPTS_PER_PROCESS > LIMIT
    assert totals == dict.fromkeys(ALGORITHMS, LIMIT)


def test_scripts_use_redis_server_time(fresh_redis_url: str) -> None:
    """Without a test clock the windows are aligned to Redis TIME, not to ours."""
    lim = RateLimiter(fresh_redis_url, "5/hour", algorithm="fixed_window")
    d = lim.hit("k")
    secs, micros = redis.Redis.from_url(fresh_redis_url).time()
    server_now = secs + micros / 1e6
    assert d.reset_after == pytest.approx(3600 - server_now % 3600, abs=1.0)
    # and time really passes on the server: a 1/0.2s bucket refills by itself
    lim2 = RateLimiter(fresh_redis_url, "1/0.2s", algorithm="gcra")
    assert lim2.hit("k").allowed
    denied = lim2.hit("k")
    assert not denied.allowed
    assert 0 < denied.retry_after <= 0.2


@pytest.mark.cluster
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_multi_window_scripts_run_on_a_cluster(redis_cluster_url: str, algorithm: str) -> None:
    lim = RateLimiter(redis_cluster_url, "2/minute; 3/hour; 1000/day", algorithm=algorithm)  # type: ignore[arg-type]
    keys = [f"user:{i}" for i in range(30)]  # spread over all three masters
    for k in keys:
        got = [lim.hit(k).allowed for _ in range(3)]
        assert got == [True, True, False], k
    assert lim.stats()["backend_errors"] == 0
    lim.reset(keys[0])
    assert lim.hit(keys[0]).allowed


@pytest.mark.cluster
async def test_async_limiters_on_a_cluster(redis_cluster_url: str) -> None:
    lim = RateLimiter(redis_cluster_url, "1/minute; 5/day", algorithm="sliding_log")
    assert [(await lim.ahit(f"u{i}")).allowed for i in range(20)] == [True] * 20
    assert not (await lim.ahit("u3")).allowed
    cc = ConcurrencyLimiter(redis_cluster_url, 1)
    async with cc.ahold("job"):
        assert await cc.atry_acquire("job") is None
    assert lim.stats()["backend_errors"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("how", ["stop", "pause"])
@pytest.mark.parametrize("policy", ["fail_open", "fail_closed", "local_fallback"])
def test_redis_outage_follows_the_policy_and_recovers(
    redis_server: Any, policy: str, how: str
) -> None:
    clock = FakeClock()  # drives the cooldown only; the scripts use Redis TIME
    lim = RateLimiter(
        redis_server.url,
        "10/hour",
        algorithm="gcra",
        on_backend_error=policy,  # type: ignore[arg-type]
        fallback_instances=2,
        backend_cooldown=3.0,
        clock=clock,
    )
    assert [lim.hit("k").allowed for _ in range(3)] == [True] * 3
    assert lim.stats()["backend_errors"] == 0

    pid = redis_server.process.pid
    if how == "stop":
        redis_server.stop(kill=True)
    else:  # the server hangs: connections open but nothing answers
        os.kill(pid, signal.SIGSTOP)
    try:
        began = time.perf_counter()
        first = lim.hit("k")
        first_latency = time.perf_counter() - began
        latencies = []
        decisions = [first]
        for _ in range(20):
            began = time.perf_counter()
            decisions.append(lim.hit("k"))
            latencies.append(time.perf_counter() - began)
        stats = lim.stats()
    finally:
        if how == "pause":
            os.kill(pid, signal.SIGCONT)

    # the first failure costs at most about one socket timeout (0.25 s)...
    assert first_latency < 1.0
    # ...and then nothing touches the network until the cooldown ends
    assert stats["backend_errors"] == 1
    assert stats["backend_episodes"] == 1
    assert max(latencies) < 0.05
    allowed = [d.allowed for d in decisions]
    if policy == "fail_open":
        assert all(allowed)
    elif policy == "fail_closed":
        assert not any(allowed)
        assert all(0 < d.retry_after <= 3.0 for d in decisions)
    else:  # local fallback: 10/hour over 2 instances -> 5 per instance
        assert allowed == [True] * 5 + [False] * 16

    if how == "stop":
        redis_server.restart()  # empty: no persistence
    clock.advance(3.0)  # the cooldown ends: the next call probes Redis again
    recovered = lim.hit("k")
    assert lim.stats()["backend_errors"] == 1, "the probe should have succeeded"
    assert recovered.allowed
    if how == "stop":  # restarted empty (no persistence)
        assert recovered.remaining == 9
    else:
        # State kept, and the request that timed out while the server hung was
        # still in its socket buffer: Redis executed it on resume. A timeout is
        # not a "no": 3 + 1 (ghost) + 1 (this one) are consumed.
        assert recovered.remaining == 5
    assert not math.isinf(recovered.reset_after)


def test_unix_socket_url(tmp_path: Any) -> None:
    from servers import RedisServer

    sock = tmp_path / "r.sock"
    with RedisServer(tmp_path, args=["--unixsocket", str(sock), "--unixsocketperm", "700"]) as srv:
        srv.start()
        lim = RateLimiter(f"unix://{sock}?db=2", "2/minute", on_backend_error="fail_closed")
        assert [lim.hit("k").allowed for _ in range(3)] == [True, True, False]
        assert lim.stats()["backend_errors"] == 0
        assert redis.Redis(unix_socket_path=str(sock), db=2).dbsize() == 1


def test_limiter_names_and_tiers_never_share_keys(fresh_redis_url: str) -> None:
    plain = RateLimiter(fresh_redis_url, "1/minute", name="chat:paid")
    tiered = RateLimiter(fresh_redis_url, {"paid": "1/minute"}, name="chat")
    assert plain.hit("u").allowed
    assert tiered.hit("u", tier="paid").allowed


def test_bring_your_own_client_with_decoded_responses(fresh_redis_url: str) -> None:
    client = redis.Redis.from_url(fresh_redis_url, decode_responses=True)
    lim = RateLimiter(RedisBackend(fresh_redis_url, client=client), "2/minute; 5/hour")
    assert [lim.hit("k").allowed for _ in range(3)] == [True, True, False]
    assert lim.stats()["backend_errors"] == 0

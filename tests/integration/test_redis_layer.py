"""The one Redis client layer on real servers (Redis 6, Redis 7, Valkey 8).

Bursts from a cold backend (connections opened counted by the server's
``total_connections_received``), the auto-pipeline's guarantees (order, cancellation,
NOSCRIPT inside a batch, a server stopped or killed mid-pipeline), the loop-lag probe
while Redis is SIGSTOPped, and no client left open per finished event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import time
from collections.abc import Awaitable, Iterator
from typing import Any, TypeVar

import pytest
import redis
from servers import RedisServer

from scalekit.backends import RedisBackend, backend_from_url
from scalekit.backends._lua import LuaScript
from scalekit.errors import BackendDataError, BackendError, ConcurrencyLimitExceeded
from scalekit.ratelimit import ConcurrencyLimiter, RateLimiter
from scalekit.resilience import CircuitBreaker

T = TypeVar("T")

_INCR = "return redis.call('INCRBY', KEYS[1], 1)"
INCR = LuaScript("t_layer_incr", _INCR, hashlib.sha1(_INCR.encode()).hexdigest())
_ECHO = "return ARGV[1]"
ECHO = LuaScript("t_layer_echo", _ECHO, hashlib.sha1(_ECHO.encode()).hexdigest())

BURST = 1000
AUTOPIPELINE = [True, False]
#: the bursts test bounds and counts, not timeouts: 1,000 tasks on a loaded 2-core
#: machine can starve the loop past the default 0.25 s between a send and its read
#: (redis-py's own timeout without auto-pipelining), which would be a degraded decision
BURST_TIMEOUT = 2.0


def _admin(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def _opened(admin: redis.Redis) -> int:
    """Connections the server has accepted so far (the admin's own included)."""
    return int(admin.info("stats")["total_connections_received"])


def _clients(admin: redis.Redis) -> int:
    return len(admin.client_list())


def _calls(admin: redis.Redis, command: str) -> int:
    stats = admin.info("commandstats").get(f"cmdstat_{command}", {})
    return int(stats.get("calls", 0))


def _script_loads(admin: redis.Redis) -> int:
    """SCRIPT LOAD calls (Redis >= 7 and Valkey count subcommands apart; 6 counts every SCRIPT)."""
    major = int(str(admin.info("server")["redis_version"]).split(".")[0])
    return _calls(admin, "script|load" if major >= 7 else "script")


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


@contextlib.contextmanager
def stopped(server: RedisServer) -> Iterator[None]:
    """The server SIGSTOPped (accepting nothing, answering nothing) inside the block."""
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        if server.process is not None and server.process.poll() is None:
            os.kill(server.process.pid, signal.SIGCONT)


# -- cold bursts --------------------------------------------------------------------------


@pytest.mark.parametrize("autopipeline", AUTOPIPELINE)
def test_cold_burst_of_evalsha_stays_within_the_bound(
    redis_kind_url: str, autopipeline: bool
) -> None:
    admin = _admin(redis_kind_url)
    admin.script_flush()
    opened = _opened(admin)
    loads = _script_loads(admin)
    backend = RedisBackend(redis_kind_url, autopipeline=autopipeline, socket_timeout=BURST_TIMEOUT)

    async def main() -> list[Any]:
        return await asyncio.gather(*(backend.aevalsha(INCR, ["burst"], []) for _ in range(BURST)))

    replies = run(main())
    assert sorted(replies) == list(range(1, BURST + 1))  # every caller its own reply
    assert _opened(admin) - opened <= backend.max_connections
    if autopipeline:
        assert _script_loads(admin) == loads + 1  # NOSCRIPT for all, loaded once
        assert _opened(admin) - opened == 1  # one burst, one connection
    admin.close()


@pytest.mark.parametrize("autopipeline", AUTOPIPELINE)
def test_cold_burst_on_async_rate_limiter_counts_every_hit(
    redis_kind_url: str, autopipeline: bool
) -> None:
    admin = _admin(redis_kind_url)
    opened = _opened(admin)
    url = f"{redis_kind_url}?autopipeline={'true' if autopipeline else 'false'}"

    async def main() -> tuple[int, dict[str, int]]:
        limiter = RateLimiter(url, "100/hour")
        decisions = await asyncio.gather(*(limiter.ahit("user") for _ in range(BURST)))
        return sum(d.allowed for d in decisions), limiter.stats()

    allowed, stats = run(main())
    assert allowed == 100  # exactly the limit: nothing let through by a degraded decision
    assert stats["degraded"] == 0 and stats["backend_errors"] == 0
    assert _opened(admin) - opened <= 16
    admin.close()


@pytest.mark.parametrize("autopipeline", AUTOPIPELINE)
def test_cold_burst_on_async_concurrency_limiter_never_exceeds_the_limit(
    redis_kind_url: str, autopipeline: bool
) -> None:
    admin = _admin(redis_kind_url)
    opened = _opened(admin)
    backend = RedisBackend(redis_kind_url, autopipeline=autopipeline, socket_timeout=BURST_TIMEOUT)
    limiter = ConcurrencyLimiter(backend, 5)  # fail_open: a degraded acquire would pass
    holding = 0
    most = 0
    refused = 0

    async def main() -> int:
        nonlocal holding, most
        release = asyncio.Event()
        all_refused = asyncio.Event()

        async def one() -> bool:
            nonlocal holding, most, refused
            try:
                lease = await limiter.aacquire("db")
            except ConcurrencyLimitExceeded:
                refused += 1
                if refused == BURST - 5:
                    all_refused.set()
                return False
            holding += 1
            most = max(most, holding)
            await release.wait()
            holding -= 1
            await limiter.arelease(lease)
            return True

        tasks = [asyncio.ensure_future(one()) for _ in range(BURST)]
        async with asyncio.timeout(30):
            await all_refused.wait()  # every other caller refused while 5 hold a slot
        release.set()
        return sum(await asyncio.gather(*tasks))

    acquired = run(main())
    assert acquired == 5 and most == 5
    assert _opened(admin) - opened <= backend.max_connections
    admin.close()


@pytest.mark.parametrize("autopipeline", AUTOPIPELINE)
def test_cold_burst_through_a_shared_circuit_breaker(
    redis_kind_url: str, autopipeline: bool
) -> None:
    from scalekit.resilience._shared import SharedState

    admin = _admin(redis_kind_url)
    opened = _opened(admin)
    backend = RedisBackend(redis_kind_url, autopipeline=autopipeline, socket_timeout=BURST_TIMEOUT)
    shared = SharedState(backend, on_backend_error="fail_closed")  # degraded = rejected
    breaker = CircuitBreaker("layer", record=ValueError, shared=shared)

    async def ok() -> int:
        return 1

    async def main() -> int:
        return sum(await asyncio.gather(*(breaker.acall(ok) for _ in range(BURST))))

    assert run(main()) == BURST  # no call rejected by a backend failure
    assert shared._guard.errors == 0
    assert _opened(admin) - opened <= backend.max_connections
    admin.close()


def test_cold_burst_on_redis_cluster(redis_cluster_url: str) -> None:
    """No auto-pipelining on a cluster; its per-node bound (1,000) holds a burst."""
    backend = RedisBackend(redis_cluster_url)
    assert not backend.autopipeline and backend.max_connections == 1000

    async def main() -> tuple[int, dict[str, int]]:
        limiter = RateLimiter(backend, "100/hour", prefix=f"cl{time.monotonic_ns()}")
        decisions = await asyncio.gather(*(limiter.ahit("user") for _ in range(BURST)))
        return sum(d.allowed for d in decisions), limiter.stats()

    allowed, stats = run(main())
    assert allowed == 100
    assert stats["degraded"] == 0 and stats["backend_errors"] == 0


# -- the auto-pipeline's guarantees -------------------------------------------------------------


def test_a_tick_is_one_batch_and_replies_go_to_their_callers(redis_kind_url: str) -> None:
    backend = RedisBackend(redis_kind_url)

    async def main() -> None:
        await backend.aexecute("PING")  # connection open, so the next tick is measured alone
        before = backend.stats()
        tokens = [f"t{i}" for i in range(500)]
        replies = await asyncio.gather(*(backend.aexecute("ECHO", t) for t in tokens))
        after = backend.stats()
        assert replies == [t.encode() for t in tokens]
        assert after.batches - before.batches == 1
        assert after.max_pipeline_depth >= 500
        assert after.connections == 1

    run(main())


def test_cancelled_callers_never_corrupt_other_replies(redis_kind_server: RedisServer) -> None:
    backend = RedisBackend(redis_kind_server.url, socket_timeout=5.0)
    admin = _admin(redis_kind_server.url)

    async def main() -> None:
        await backend.aevalsha(ECHO, [], ["warm"])
        echoes = _calls(admin, "evalsha")
        # 1) cancelled in the tick it called: never sent
        doomed = [asyncio.ensure_future(backend.aevalsha(ECHO, [], ["x"])) for _ in range(50)]
        await asyncio.sleep(0)  # the tasks start and queue their commands
        for t in doomed:
            t.cancel()
        await asyncio.gather(*doomed, return_exceptions=True)
        await backend.aevalsha(ECHO, [], ["after"])
        assert _calls(admin, "evalsha") == echoes + 1
        # 2) cancelled after being written, while the server holds the replies back
        with stopped(redis_kind_server):
            tasks = [
                asyncio.ensure_future(backend.aevalsha(ECHO, [], [f"v{i}"])) for i in range(400)
            ]
            await asyncio.sleep(0.05)  # written; the server is stopped, no reply yet
            for i, t in enumerate(tasks):
                if i % 2:
                    t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for i, r in enumerate(results):
            if i % 2:
                assert isinstance(r, asyncio.CancelledError)
            else:
                assert r == f"v{i}".encode()  # its own reply, not a cancelled neighbour's
        # the connection is still in step: the next command gets its own reply
        assert await backend.aevalsha(ECHO, [], ["next"]) == b"next"
        assert backend.stats().errors == 0

    run(main())
    admin.close()


def test_a_value_that_cannot_be_encoded_fails_only_its_caller(redis_kind_url: str) -> None:
    backend = RedisBackend(redis_kind_url)

    async def main() -> None:
        good = [backend.aexecute("ECHO", f"e{i}") for i in range(10)]
        bad = backend.aexecute("SET", "k", None)  # type: ignore[arg-type]
        results = await asyncio.gather(bad, *good, return_exceptions=True)
        assert isinstance(results[0], BackendDataError)
        assert results[1:] == [f"e{i}".encode() for i in range(10)]
        assert await backend.aexecute("ECHO", b"\x00\xff") == b"\x00\xff"
        assert await backend.aexecute("ECHO", 1.5) == b"1.5"

    run(main())


def test_noscript_inside_a_batch_loads_once_and_retries(redis_kind_url: str) -> None:
    backend = RedisBackend(redis_kind_url)
    admin = _admin(redis_kind_url)

    async def main() -> None:
        assert await backend.aevalsha(INCR, ["ns"], []) == 1
        admin.script_flush()  # e.g. a failover to a replica without the script
        loads = _script_loads(admin)
        replies = await asyncio.gather(*(backend.aevalsha(INCR, ["ns"], []) for _ in range(300)))
        assert sorted(replies) == list(range(2, 302))
        assert _script_loads(admin) == loads + 1

    run(main())
    admin.close()


@pytest.mark.parametrize("how", ["stop", "stop-then-kill"])
def test_server_stopped_or_killed_mid_pipeline(redis_kind_server: RedisServer, how: str) -> None:
    timeout = 0.3
    backend = RedisBackend(redis_kind_server.url, socket_timeout=timeout)

    async def main() -> None:
        await backend.aevalsha(ECHO, [], ["warm"])
        limiter = RateLimiter(backend, "1000/hour", on_backend_error="fail_closed")
        await limiter.ahit("k")  # its script loaded
        with stopped(redis_kind_server):
            began = time.monotonic()
            echoes = [
                asyncio.ensure_future(backend.aevalsha(ECHO, [], [f"v{i}"])) for i in range(300)
            ]
            hits = [asyncio.ensure_future(limiter.ahit("k")) for _ in range(300)]
            await asyncio.sleep(0.05)  # all written, none answered
            if how == "stop-then-kill":
                redis_kind_server.stop(kill=True)
            async with asyncio.timeout(timeout * 4):  # nothing hangs
                results = await asyncio.gather(*echoes, return_exceptions=True)
                decisions = await asyncio.gather(*hits)
            elapsed = time.monotonic() - began
        assert all(isinstance(r, BackendError) for r in results), results[:3]
        assert not any(d.allowed for d in decisions)  # fail_closed for every caller
        assert elapsed < timeout + 0.05 + 0.5
        assert backend.stats().errors >= 300

    run(main())
    # after a restart the backend works again on a fresh connection
    if how == "stop-then-kill":
        redis_kind_server.start()

    async def again() -> Any:
        return await backend.aevalsha(ECHO, [], ["back"])

    assert run(again()) == b"back"


def test_no_blocking_call_while_redis_is_stopped(redis_server: RedisServer) -> None:
    """A loop-lag probe ticks every 5 ms while 200 decisions wait on a stopped Redis.

    Any blocking call to the stopped server would stall the loop for a whole socket
    timeout (1 s); the bound below leaves room for a busy machine's scheduling."""
    backend = RedisBackend(redis_server.url, socket_timeout=1.0, connect_timeout=1.0)

    async def main() -> float:
        limiter = RateLimiter(backend, "10/second")
        await limiter.ahit("warm")
        worst = 0.0
        done = False

        async def probe() -> None:
            nonlocal worst
            last = time.monotonic()
            while not done:
                await asyncio.sleep(0.005)
                now = time.monotonic()
                worst = max(worst, now - last - 0.005)
                last = now

        with stopped(redis_server):
            task = asyncio.ensure_future(probe())
            async with asyncio.timeout(5):
                await asyncio.gather(*(limiter.ahit(f"k{i % 7}") for i in range(200)))
                # the second round: the guard is cooling down, the backend is skipped
                await asyncio.gather(*(limiter.ahit("k") for _ in range(200)))
            done = True
            await task
        return worst

    assert run(main()) < 0.5


def test_pool_exhausted_is_a_backend_error_within_pool_timeout(redis_kind_url: str) -> None:
    backend = RedisBackend(redis_kind_url, max_connections=1, pool_timeout=0.1, autopipeline=False)

    async def main() -> None:
        pool = backend.async_client().connection_pool
        held = await pool.get_connection()
        began = time.monotonic()
        with pytest.raises(BackendError, match=r"exhausted|No connection"):
            await backend.aexecute("PING")
        assert time.monotonic() - began < 1.0
        await pool.release(held)
        assert await backend.aexecute("PING") is True
        assert backend.stats().pool_timeouts == 1

    run(main())


def test_pool_waiters_are_served_in_arrival_order(redis_kind_url: str) -> None:
    """A released connection goes to the oldest waiter: callers that release and take
    again at once (a busy loop of commands) cannot starve one that waits."""
    backend = RedisBackend(redis_kind_url, max_connections=1, autopipeline=False)

    async def main() -> tuple[int, int]:
        pool = backend.async_client().connection_pool
        cycles = 0
        served_at: list[int] = []
        busy = asyncio.Event()

        async def hot() -> None:
            nonlocal cycles
            for _ in range(200):
                connection = await pool.get_connection()
                cycles += 1
                if cycles == 10:
                    busy.set()
                await asyncio.sleep(0)  # use it across a loop iteration
                await pool.release(connection)  # ... and take it again at once

        async def cold() -> None:
            connection = await pool.get_connection()
            served_at.append(cycles)
            await pool.release(connection)

        hot_tasks = [asyncio.ensure_future(hot()) for _ in range(3)]
        await busy.wait()
        start = cycles
        await asyncio.gather(cold(), *hot_tasks)
        return start, served_at[0]

    start, served = run(main())
    assert served - start <= 4  # behind the three hot callers at most, then served


# -- lifetimes ---------------------------------------------------------------------------------


def test_no_client_left_open_per_finished_event_loop(redis_kind_url: str) -> None:
    admin = _admin(redis_kind_url)
    backend = backend_from_url(redis_kind_url)
    assert isinstance(backend, RedisBackend)
    limiter = RateLimiter(backend, "1000000/hour")
    before = _clients(admin)

    async def once(i: int) -> None:
        await limiter.ahit(f"u{i}")
        await backend.aexecute("SET", f"k{i}", "v")

    for i in range(300):
        asyncio.run(once(i))
    assert _clients(admin) <= before
    assert backend.stats().connections == 0
    admin.close()


def test_a_loop_closed_without_shutting_down_is_forgotten(redis_kind_url: str) -> None:
    backend = RedisBackend(redis_kind_url)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(backend.aexecute("PING"))
    loop.run_until_complete(backend.aclose())
    loop.close()
    assert run(backend.aexecute("PING")) is True
    assert len(backend._loops) == 0


# -- stats and health ------------------------------------------------------------------------


def test_stats_and_health(redis_kind_url: str) -> None:
    backend = RedisBackend(redis_kind_url)
    report = backend.health()
    assert report.ok and report.error is None and report.stats.max_size == 16

    async def main() -> None:
        r = await backend.ahealth()
        assert r.ok and r.latency >= 0
        await asyncio.gather(*(backend.aexecute("PING") for _ in range(100)))
        s = backend.stats()
        assert s.max_connections == 16 and 1 <= s.connections <= 16
        assert s.commands >= 101 and s.batches >= 2 and s.in_flight == 0 and s.errors == 0

    run(main())
    backend.close()


def test_health_reports_a_dead_server_without_raising() -> None:
    backend = RedisBackend("redis://127.0.0.1:1/0", connect_timeout=0.1)
    assert not backend.health().ok

    async def main() -> None:
        report = await backend.ahealth()
        assert not report.ok and report.error

    run(main())


def test_idle_sync_connections_are_closed(redis_kind_url: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    backend = RedisBackend(redis_kind_url, max_idle=0.05)
    with ThreadPoolExecutor(8) as threads:
        list(threads.map(lambda i: backend.execute("BLPOP", f"none{i}", "0.02"), range(16)))
    assert backend.stats().connections > 1
    time.sleep(0.1)  # the idleness under test, not a wait for an event
    backend.execute("PING")  # a release sweeps the idle ones
    assert backend.stats().connections == 1
    backend.close()


def test_idle_connections_are_closed(redis_kind_url: str) -> None:
    backend = RedisBackend(redis_kind_url, max_idle=0.05, autopipeline=False)

    async def main() -> None:
        await asyncio.gather(*(backend.aexecute("PING") for _ in range(20)))
        assert backend.stats().connections > 1
        await asyncio.sleep(0.1)  # the idleness under test, not a wait for an event
        await backend.aexecute("PING")  # a release sweeps the idle ones
        assert backend.stats().connections == 1

    run(main())


def test_pipeline_figures_are_exported_natively_across_loops(redis_url: str) -> None:
    """The auto-pipeline's commands and batches reach the metrics registry by
    themselves (no register_source), under the redacted URL, and survive their loop."""
    from scalekit.observability import default_registry

    def series(name: str) -> dict[tuple[tuple[str, str], ...], float]:
        [metric] = [m for m in default_registry.collect() if m.name == name]
        return {tuple(sorted(s.labels.items())): s.value for s in metric.samples}

    backend = RedisBackend(redis_url)
    label = (("backend", backend._where[:128]),)
    before = series("scalekit_redis_commands_total").get(label, 0.0)
    batches_before = series("scalekit_redis_batches_total").get(label, 0.0)

    async def burst() -> None:
        await asyncio.gather(*(backend.aexecute("PING") for _ in range(50)))

    run(burst())
    run(burst())  # a second event loop: the first loop's pipeline is gone, its counts stay
    assert series("scalekit_redis_commands_total")[label] - before == 100
    assert series("scalekit_redis_batches_total")[label] - batches_before >= 2
    assert series("scalekit_redis_in_flight")[label] == 0
    s = backend.stats()
    assert s.commands >= 100 and s.batches >= 2 and s.errors == 0
    backend.close()

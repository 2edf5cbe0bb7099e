"""Shared breaker state: two "processes" (two SharedState objects) on one Redis,
over fakeredis and a real server, sync and async, on a FakeClock sent to the scripts."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import fakeredis.aioredis
import pytest

from scalekit import RedisBackend
from scalekit.errors import CircuitOpenError, ConfigurationError
from scalekit.resilience import CircuitBreaker, State
from scalekit.resilience._shared import SharedState
from scalekit.testing import FakeClock

_names = itertools.count()


class Boom(Exception):
    pass


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["fakeredis", "redis", "redis-nopipe", "valkey", "cluster"])
def backend_factory(
    request: pytest.FixtureRequest, clock: FakeClock
) -> Iterator[Callable[[], RedisBackend]]:
    made: list[RedisBackend] = []
    if request.param == "fakeredis":
        server = fakeredis.FakeServer()

        def make() -> RedisBackend:
            return RedisBackend(
                "redis://fakeredis",
                client=fakeredis.FakeRedis(server=server),
                async_client_factory=lambda: fakeredis.aioredis.FakeRedis(server=server),
                clock=clock.now,
            )

    else:
        fixture = {"cluster": "redis_cluster_url", "valkey": "valkey_url"}
        url = request.getfixturevalue(fixture.get(request.param, "fresh_redis_url"))

        def make() -> RedisBackend:
            b = RedisBackend(
                url,
                clock=clock.now,
                socket_timeout=5.0,
                connect_timeout=5.0,
                autopipeline=request.param != "redis-nopipe",
            )
            made.append(b)
            return b

    yield make
    for b in made:
        b.close()


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Fleet:
    """N breakers with the same name on the same Redis, as N processes would have."""

    def __init__(
        self, make: Callable[[], RedisBackend], clock: FakeClock, mode: str, n: int = 2, **kw: Any
    ) -> None:
        name = f"fleet-{next(_names)}"
        kw.setdefault("failure_threshold", 3)
        kw.setdefault("open_duration", 10)
        self.mode = mode
        self.breakers = [
            CircuitBreaker(name, record=Boom, shared=SharedState(make()), clock=clock, **kw)
            for _ in range(n)
        ]
        self.hits = 0

        def dep(fail: bool) -> str:
            self.hits += 1
            if fail:
                raise Boom
            return "ok"

        async def adep(fail: bool) -> str:
            await asyncio.sleep(0)
            return dep(fail)

        self.sync = [b(dep) for b in self.breakers]
        self.async_ = [b(adep) for b in self.breakers]

    async def call(self, i: int, fail: bool = False) -> str:
        if self.mode == "sync":
            return self.sync[i](fail)
        return await self.async_[i](fail)

    async def outcome(self, i: int, fail: bool = False) -> str:
        try:
            return await self.call(i, fail)
        except CircuitOpenError:
            return "rejected"
        except Boom:
            return "failed"


async def test_failures_add_up_across_the_fleet(
    backend_factory: Any, clock: FakeClock, mode: str
) -> None:
    f = Fleet(backend_factory, clock, mode)
    assert await f.outcome(0, True) == "failed"
    assert await f.outcome(1, True) == "failed"
    assert await f.outcome(0, True) == "failed"  # the third consecutive: the fleet trips
    assert f.breakers[0].state is State.OPEN
    # process 1 still has a closed view: its next outcome brings the news
    assert await f.outcome(1, False) == "ok"
    assert f.breakers[1].state is State.OPEN
    assert await f.outcome(1) == "rejected"
    assert f.hits == 4


async def test_exactly_one_probe_for_the_fleet(
    backend_factory: Any, clock: FakeClock, mode: str
) -> None:
    f = Fleet(backend_factory, clock, mode, n=4)
    for _ in range(3):
        await f.outcome(0, True)
    for i in range(4):
        await f.outcome(i)  # everyone learns (processes 1-3 through a stale success)
    assert all(b.state is State.OPEN for b in f.breakers)
    hits = f.hits
    clock.advance(10)
    # the first asker takes the lease; the probe is still "running" (FakeClock):
    # emulate by admitting through the shared state directly
    shared = [b._shared for b in f.breakers]
    assert all(s is not None for s in shared)
    first = await _admit(shared[0], mode)  # type: ignore[arg-type]
    assert first[0] == 1  # PROBE
    for s in shared[1:]:
        kind, retry_after = await _admit(s, mode)  # type: ignore[arg-type]
        assert kind == 2 and retry_after > 0  # REJECT: another process holds the lease
    for i in range(1, 4):
        assert await f.outcome(i) == "rejected"
    assert f.hits == hits
    # the probe succeeds: the fleet closes
    await _record(shared[0], mode, 1, first[1], 0)  # type: ignore[arg-type]
    assert f.breakers[0].state is State.CLOSED
    clock.advance(1)  # past the half-open poll interval of the others
    for i in range(1, 4):
        assert await f.outcome(i) == "ok"
    assert all(b.state is State.CLOSED for b in f.breakers)


async def _admit(s: SharedState, mode: str) -> tuple[int, float]:
    return s.admit() if mode == "sync" else await s.aadmit()


async def _record(s: SharedState, mode: str, kind: int, ticket: float, outcome: int) -> None:
    if mode == "sync":
        s.record(kind, ticket, outcome, False)
    else:
        await s.arecord(kind, ticket, outcome, False)


async def test_failed_probe_reopens_with_backoff(
    backend_factory: Any, clock: FakeClock, mode: str
) -> None:
    f = Fleet(
        backend_factory,
        clock,
        mode,
        failure_threshold=1,
        max_open_duration=100,
        backoff_multiplier=3,
    )
    await f.outcome(0, True)
    clock.advance(10)
    # process 1 has no view yet: it asks Redis, gets the fleet's only probe, which fails
    assert await f.outcome(1, True) == "failed"
    assert f.breakers[1].state is State.OPEN
    assert f.breakers[1].snapshot().retry_after == pytest.approx(30)  # 10 s x 3
    clock.advance(10)
    assert await f.outcome(0) == "rejected"  # its own view expired; Redis says 20 s more
    assert f.breakers[0].snapshot().retry_after == pytest.approx(20)
    assert f.hits == 2


async def test_stuck_probe_times_out_fleet_wide(
    backend_factory: Any, clock: FakeClock, mode: str
) -> None:
    f = Fleet(backend_factory, clock, mode, failure_threshold=1, probe_timeout=5)
    await f.outcome(0, True)
    clock.advance(10)
    s0, s1 = (b._shared for b in f.breakers)
    assert s0 is not None and s1 is not None
    kind, token = await _admit(s0, mode)
    assert kind == 1
    clock.advance(5)  # the probe never reports
    kind, _ = await _admit(s1, mode)
    assert kind == 2 and f.breakers[1].state is State.OPEN  # back to open
    await _record(s0, mode, 1, token, 0)  # the late success changes nothing
    assert s0.refresh() is State.OPEN


async def test_time_window_shared(backend_factory: Any, clock: FakeClock, mode: str) -> None:
    f = Fleet(
        backend_factory,
        clock,
        mode,
        failure_threshold=None,
        failure_rate_threshold=0.5,
        window_duration=10,
        minimum_calls=4,
    )
    await f.outcome(0, True)
    await f.outcome(1, False)
    await f.outcome(0, False)
    assert f.breakers[0].state is State.CLOSED
    await f.outcome(1, True)  # 2 of 4 across two processes
    assert f.breakers[1].state is State.OPEN


async def test_manual_controls_reach_the_fleet(
    backend_factory: Any, clock: FakeClock, mode: str
) -> None:
    f = Fleet(backend_factory, clock, mode)
    f.breakers[0].open()
    assert f.breakers[1]._shared.refresh() is State.FORCED_OPEN  # type: ignore[union-attr]
    assert await f.outcome(1) == "rejected"
    f.breakers[0].close()
    f.breakers[1]._shared.refresh()  # type: ignore[union-attr]
    assert await f.outcome(1) == "ok"
    f.breakers[1].disable()
    assert f.breakers[0]._shared.refresh() is State.DISABLED  # type: ignore[union-attr]
    for _ in range(5):
        assert await f.outcome(0, True) == "failed"
    assert f.breakers[0].snapshot().state is State.DISABLED


def test_shared_state_validation(backend_factory: Any) -> None:
    with pytest.raises(ConfigurationError, match="Redis"):
        SharedState("memory://")
    with pytest.raises(ConfigurationError, match="window_duration"):
        CircuitBreaker(
            "x",
            record=Boom,
            failure_rate_threshold=0.5,
            window_size=10,
            shared=SharedState(backend_factory()),
        )
    s = SharedState(backend_factory())
    CircuitBreaker("y", record=Boom, shared=s)
    with pytest.raises(ConfigurationError, match="one CircuitBreaker"):
        CircuitBreaker("z", record=Boom, shared=s)
    with pytest.raises(ConfigurationError, match="on_backend_error"):
        SharedState(backend_factory(), on_backend_error="panic")  # type: ignore[arg-type]

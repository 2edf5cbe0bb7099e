"""Half-open admits at most N probes, whatever the interleaving of 50 callers."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalekit.errors import CircuitOpenError
from scalekit.resilience import CircuitBreaker, State
from scalekit.testing import FakeClock

CALLERS = 50


class Boom(Exception):
    pass


@pytest.fixture(autouse=True)
def fast_switching() -> Iterator[None]:
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as CPython allows
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def tripped(n: int, clock: FakeClock) -> CircuitBreaker:
    breaker = CircuitBreaker(
        "probes",
        record=Boom,
        failure_threshold=1,
        open_duration=5,
        half_open_max_calls=n,
        clock=clock,
    )
    breaker.open(5)
    clock.advance(5)  # half-open at the next call
    return breaker


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 5),
    spins=st.lists(st.integers(0, 30), min_size=CALLERS, max_size=CALLERS),
    fail_probe=st.booleans(),
)
def test_threads_never_exceed_n_probes(n: int, spins: list[int], fail_probe: bool) -> None:
    clock = FakeClock()
    breaker = tripped(n, clock)
    release = threading.Event()
    lock = threading.Lock()
    running = [0]
    peak = [0]
    admitted = [0]
    rejected = [0]
    start = threading.Barrier(CALLERS)

    @breaker
    def dep() -> None:
        with lock:
            admitted[0] += 1
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        release.wait(10)
        with lock:
            running[0] -= 1
        if fail_probe:
            raise Boom

    def caller(spin: int) -> None:
        start.wait()
        for _ in range(spin):
            time.sleep(0)
        try:
            dep()
        except CircuitOpenError:
            with lock:
                rejected[0] += 1
        except Boom:
            pass

    threads = [threading.Thread(target=caller, args=(s,)) for s in spins]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while admitted[0] + rejected[0] < CALLERS and time.monotonic() < deadline:
        time.sleep(0.001)  # waiting for every caller to have been admitted or refused
    release.set()
    for t in threads:
        t.join()
    assert admitted[0] == n and peak[0] <= n
    assert rejected[0] == CALLERS - n
    assert breaker.state is (State.OPEN if fail_probe else State.CLOSED)


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(1, 5),
    spins=st.lists(st.integers(0, 5), min_size=CALLERS, max_size=CALLERS),
    outcomes=st.lists(st.booleans(), min_size=5, max_size=5),
)
def test_tasks_never_exceed_n_probes(n: int, spins: list[int], outcomes: list[bool]) -> None:
    async def main() -> tuple[int, int, State]:
        clock = FakeClock()
        breaker = tripped(n, clock)
        admitted = 0
        rejected = 0
        release = asyncio.Event()
        everyone_tried = asyncio.Event()

        def tried() -> None:
            if admitted + rejected == CALLERS:
                everyone_tried.set()

        @breaker
        async def dep() -> None:
            nonlocal admitted
            i = admitted
            admitted += 1
            tried()
            await release.wait()
            if outcomes[i]:
                raise Boom

        async def caller(spin: int) -> None:
            nonlocal rejected
            for _ in range(spin):
                await asyncio.sleep(0)
            try:
                await dep()
            except CircuitOpenError:
                rejected += 1
                tried()
            except Boom:
                pass

        tasks = [asyncio.create_task(caller(s)) for s in spins]
        await everyone_tried.wait()
        release.set()
        await asyncio.gather(*tasks)
        return admitted, rejected, breaker.state

    admitted, rejected, state = asyncio.run(main())
    assert admitted == n and rejected == CALLERS - n
    assert state is (State.OPEN if any(outcomes[:n]) else State.CLOSED)

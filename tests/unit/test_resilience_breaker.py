"""Circuit breaker: every transition on FakeClock, classification, fallback, listeners."""

from __future__ import annotations

import asyncio
import math
from datetime import timedelta

import pytest

from scalekit import primitive_of
from scalekit.errors import CircuitOpenError, ConfigurationError
from scalekit.resilience import (
    BreakerEvent,
    BreakerPolicy,
    BreakerRegistry,
    CircuitBreaker,
    State,
    circuit_breaker,
)
from scalekit.resilience._machine import ADMIT, PROBE, REJECT, BreakerMachine
from scalekit.testing import FakeClock


class Boom(Exception):
    pass


class Ignored(Exception):
    pass


def machine(**kw: object) -> BreakerMachine:
    return BreakerMachine(BreakerPolicy(**kw), rng=lambda: 0.5)  # type: ignore[arg-type]


# -- the pure machine ---------------------------------------------------------------


def test_closed_to_open_after_consecutive_failures() -> None:
    m = machine(failure_threshold=3, open_duration=10)
    for _ in range(2):
        kind, epoch = m.admit(0.0)
        assert kind == ADMIT
        m.record(0.0, int(epoch), failed=True)
    assert m.state is State.CLOSED
    kind, epoch = m.admit(0.0)
    m.record(0.0, int(epoch), failed=False)  # a success resets the run
    for _ in range(2):
        m.record(1.0, m.epoch, failed=True)
    assert m.state is State.CLOSED
    m.record(2.0, m.epoch, failed=True)
    assert m.state is State.OPEN
    assert m.transitions == [(State.CLOSED, State.OPEN, 2.0)]
    assert m.admit(5.0) == (REJECT, 7.0)


def test_open_to_half_open_to_closed() -> None:
    m = machine(failure_threshold=1, open_duration=10, half_open_max_calls=2)
    m.record(0.0, m.epoch, failed=True)
    assert m.admit(9.999)[0] == REJECT
    k1, t1 = m.admit(10.0)
    assert (k1, m.state) == (PROBE, State.HALF_OPEN)
    k2, t2 = m.admit(10.0)
    assert k2 == PROBE
    k3, _ = m.admit(10.0)
    assert k3 == REJECT  # only two probes
    m.record_probe(11.0, int(t1), failed=False)
    assert m.state is State.HALF_OPEN
    m.record_probe(11.0, int(t2), failed=False)
    assert m.state is State.CLOSED
    assert [t[:2] for t in m.transitions] == [
        (State.CLOSED, State.OPEN),
        (State.OPEN, State.HALF_OPEN),
        (State.HALF_OPEN, State.CLOSED),
    ]


def test_half_open_failure_reopens_with_backoff_and_jitter() -> None:
    m = BreakerMachine(
        BreakerPolicy(
            failure_threshold=1,
            open_duration=10,
            max_open_duration=35,
            backoff_multiplier=2,
            jitter=0.5,
        ),
        rng=lambda: 0.0,  # no jitter drawn: exact durations
    )
    m.record(0.0, m.epoch, failed=True)
    assert m.open_until == 10.0
    _, tok = m.admit(10.0)
    m.record_probe(10.0, int(tok), failed=True)
    assert m.state is State.OPEN and m.open_until == 30.0  # 20 s
    _, tok = m.admit(30.0)
    m.record_probe(30.0, int(tok), failed=True)
    assert m.open_until == 65.0  # capped at 35 s
    _, tok = m.admit(65.0)
    m.record_probe(65.0, int(tok), failed=False)
    assert m.state is State.CLOSED
    m.record(70.0, m.epoch, failed=True)
    assert m.open_until == 80.0  # backoff forgotten after a close
    # jitter shortens by up to `jitter`
    j = BreakerMachine(
        BreakerPolicy(failure_threshold=1, open_duration=10, jitter=0.5), rng=lambda: 1.0
    )
    j.record(0.0, j.epoch, failed=True)
    assert j.open_until == 5.0


def test_stuck_probe_has_a_deadline() -> None:
    m = machine(failure_threshold=1, open_duration=10, probe_timeout=5)
    m.record(0.0, m.epoch, failed=True)
    _, tok = m.admit(10.0)
    assert m.admit(14.0)[0] == REJECT
    kind, retry = m.admit(15.0)  # the probe is 5 s old: a failure, open again
    assert kind == REJECT and m.state is State.OPEN and retry == 10.0
    assert m.record_probe(16.0, int(tok), failed=False) is False  # late: ignored
    assert m.state is State.OPEN


def test_ignored_probe_frees_its_slot() -> None:
    m = machine(failure_threshold=1, open_duration=1)
    m.record(0.0, m.epoch, failed=True)
    _, tok = m.admit(1.0)
    assert m.admit(1.0)[0] == REJECT
    m.release_probe(int(tok))
    kind, tok2 = m.admit(1.0)
    assert kind == PROBE
    m.record_probe(1.0, int(tok2), failed=False)
    assert m.state is State.CLOSED


def test_stale_outcomes_are_ignored() -> None:
    m = machine(failure_threshold=2, open_duration=1)
    _, old = m.admit(0.0)
    m.record(0.0, m.epoch, failed=True)
    m.record(0.0, m.epoch, failed=True)
    assert m.state is State.OPEN
    assert m.record(0.5, int(old), failed=True) is False
    _, tok = m.admit(1.0)
    m.record_probe(1.0, int(tok), failed=False)
    assert m.record(1.5, int(old), failed=True) is False  # admitted before the trip
    assert m.consecutive == 0


def test_count_window_failure_rate_with_minimum_calls() -> None:
    m = machine(failure_threshold=None, failure_rate_threshold=0.5, window_size=4, minimum_calls=4)
    for failed in (True, True, False):
        m.record(0.0, m.epoch, failed=failed)
    assert m.state is State.CLOSED  # 3 calls < minimum 4
    m.record(0.0, m.epoch, failed=False)
    assert m.state is State.OPEN  # 2/4 = 50 %


def test_count_window_slides() -> None:
    m = machine(failure_threshold=None, failure_rate_threshold=0.75, window_size=4, minimum_calls=4)
    for failed in (True, True, False, False, False, True, True):
        m.record(0.0, m.epoch, failed=failed)
        assert m.state is State.CLOSED
    assert m.window is not None and (m.window.calls, m.window.failures) == (4, 2)
    m.record(0.0, m.epoch, failed=True)  # last four: F, T, T, T
    assert m.state is State.OPEN


def test_time_window_forgets_old_calls() -> None:
    m = machine(
        failure_threshold=None, failure_rate_threshold=0.5, window_duration=10, minimum_calls=3
    )
    m.record(0.0, m.epoch, failed=True)
    m.record(1.0, m.epoch, failed=True)
    m.record(11.5, m.epoch, failed=False)  # the first two have left the window
    m.record(12.0, m.epoch, failed=False)
    assert m.state is State.CLOSED
    m.record(12.5, m.epoch, failed=True)
    assert m.state is State.CLOSED  # 1/3
    m.record(13.0, m.epoch, failed=True)
    assert m.state is State.OPEN  # 2/4


def test_slow_call_rate() -> None:
    m = machine(
        failure_threshold=None,
        slow_call_duration=1.0,
        slow_call_rate_threshold=0.5,
        window_size=10,
        minimum_calls=2,
    )
    m.record(0.0, m.epoch, failed=False, slow=True)
    m.record(0.0, m.epoch, failed=False, slow=False)
    assert m.state is State.OPEN


def test_manual_open_close_disable() -> None:
    m = machine(failure_threshold=1, open_duration=5)
    m.force_open(0.0)
    assert m.state is State.FORCED_OPEN and m.admit(1e9) == (REJECT, math.inf)
    m.close(1.0)
    assert m.state is State.CLOSED
    m.record(1.0, m.epoch, failed=False)
    transitions = len(m.transitions)
    m.close(1.5)  # already closed: no transition, the run is forgotten
    assert len(m.transitions) == transitions and m.consecutive == 0
    m.force_open(2.0, 3.0)
    assert m.state is State.OPEN and m.admit(4.0) == (REJECT, 1.0)
    assert m.admit(5.0)[0] == PROBE
    m.disable(6.0)
    assert m.admit(6.0)[0] == ADMIT
    assert m.record(6.0, m.epoch, failed=True) is False  # nothing recorded
    assert m.state is State.DISABLED


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        ({"failure_threshold": 0}, "failure_threshold"),
        ({"failure_rate_threshold": 0.5}, "window"),
        ({"failure_rate_threshold": 1.5, "window_size": 5}, r"in \(0, 1\]"),
        ({"window_size": 5}, "needs failure_rate_threshold"),
        ({"window_size": 5, "window_duration": 5, "failure_rate_threshold": 0.5}, "not both"),
        ({"open_duration": -1}, "open_duration"),
        ({"open_duration": 10, "max_open_duration": 5}, "max_open_duration"),
        ({"jitter": 2}, "jitter"),
        ({"failure_threshold": None}, "never trip"),
        ({"slow_call_duration": 1}, "go together"),
        ({"half_open_max_calls": 0}, "half_open_max_calls"),
        ({"backoff_multiplier": 0.5}, "backoff_multiplier"),
    ],
)
def test_policy_validation(kw: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        BreakerPolicy(**kw)  # type: ignore[arg-type]


def test_policy_accepts_timedelta() -> None:
    p = BreakerPolicy(open_duration=timedelta(minutes=1), probe_timeout=timedelta(seconds=3))
    assert p.open_duration == 60.0 and p.probe_timeout == 3.0


def test_backoff_never_overflows() -> None:
    p = BreakerPolicy(open_duration=1, max_open_duration=60, backoff_multiplier=1000)
    assert p.open_duration_for(10_000, 0.0) == 60.0


# -- the driver -----------------------------------------------------------------------


def make(clock: FakeClock, **kw: object) -> CircuitBreaker:
    kw.setdefault("record", Boom)
    return CircuitBreaker("dep", clock=clock, **kw)  # type: ignore[arg-type]


def test_decorated_sync_function_trips_and_recovers() -> None:
    clock = FakeClock()
    breaker = make(clock, failure_threshold=2, open_duration=10)
    calls = []

    @breaker
    def dep(fail: bool) -> str:
        calls.append(fail)
        if fail:
            raise Boom
        return "ok"

    assert dep(False) == "ok"
    for _ in range(2):
        with pytest.raises(Boom):
            dep(True)
    with pytest.raises(CircuitOpenError) as info:
        dep(False)
    assert info.value.retry_after == 10.0 and info.value.state == "open"
    assert len(calls) == 3  # the rejected call never ran
    clock.advance(10)
    assert dep(False) == "ok"  # the probe
    assert breaker.state is State.CLOSED
    snap = breaker.snapshot()
    assert (snap.calls, snap.failures, snap.rejected, snap.successes) == (4, 2, 1, 2)


async def test_decorated_async_function_trips_and_recovers() -> None:
    clock = FakeClock()
    breaker = make(clock, failure_threshold=1, open_duration=5)

    @breaker
    async def dep(fail: bool) -> str:
        await asyncio.sleep(0)
        if fail:
            raise Boom
        return "ok"

    with pytest.raises(Boom):
        await dep(True)
    with pytest.raises(CircuitOpenError):
        await dep(False)
    clock.advance(5)
    with pytest.raises(Boom):
        await dep(True)  # failed probe
    assert breaker.state is State.OPEN
    clock.advance(5)
    assert await dep(False) == "ok"
    assert breaker.state is State.CLOSED


def test_one_breaker_shared_by_sync_and_async_functions() -> None:
    clock = FakeClock()
    breaker = make(clock, failure_threshold=2)

    @breaker
    def a() -> None:
        raise Boom

    @breaker
    async def b() -> None:
        raise Boom

    with pytest.raises(Boom):
        a()
    with pytest.raises(Boom):
        asyncio.run(b())
    assert breaker.state is State.OPEN
    with pytest.raises(CircuitOpenError):
        asyncio.run(b())


def test_classification() -> None:
    clock = FakeClock()
    breaker = make(
        clock,
        record=(Boom, Ignored),
        ignore=Ignored,
        failure_result=lambda r: r == 503,
        failure_threshold=2,
    )

    @breaker
    def dep(x: object) -> object:
        if isinstance(x, BaseException):
            raise x
        return x

    with pytest.raises(Ignored):
        dep(Ignored())  # ignore wins over record
    with pytest.raises(KeyError):
        dep(KeyError())  # not recorded: the dependency answered, a success
    assert dep(503) == 503  # returned, but a failure
    assert breaker.snapshot().consecutive_failures == 1
    with pytest.raises(KeyError):
        dep(KeyError())
    assert breaker.snapshot().consecutive_failures == 0
    dep(503)
    with pytest.raises(Boom):
        dep(Boom())
    assert breaker.state is State.OPEN
    snap = breaker.snapshot()
    assert (snap.ignored, snap.failures) == (1, 3)


def test_record_predicate() -> None:
    breaker = make(
        FakeClock(), record=lambda e: isinstance(e, Boom) and "5xx" in str(e), failure_threshold=1
    )
    f = breaker(lambda e: (_ for _ in ()).throw(e))
    with pytest.raises(Boom):
        f(Boom("4xx"))
    assert breaker.state is State.CLOSED
    with pytest.raises(Boom):
        f(Boom("5xx"))
    assert breaker.state is State.OPEN


def test_fallback_on_open_and_on_failure() -> None:
    seen: list[str] = []

    def fallback(exc: BaseException, x: int) -> str:
        seen.append(type(exc).__name__)
        return f"fallback {x}"

    breaker = make(FakeClock(), failure_threshold=1, fallback=fallback)

    @breaker
    def dep(x: int) -> str:
        raise Boom

    assert dep(1) == "fallback 1"
    assert dep(2) == "fallback 2"
    assert seen == ["Boom", "CircuitOpenError"]


async def test_async_fallback_may_be_a_coroutine() -> None:
    async def fallback(exc: BaseException) -> str:
        return "cached"

    breaker = make(FakeClock(), failure_threshold=1, fallback=fallback)

    @breaker
    async def dep() -> str:
        raise Boom

    assert await dep() == "cached"
    assert await dep() == "cached"
    assert breaker.state is State.OPEN


def test_listeners_see_every_outcome_and_transition() -> None:
    clock = FakeClock()
    events: list[BreakerEvent] = []
    breaker = make(clock, failure_threshold=1, open_duration=1, listeners=(events.append,))

    def broken_listener(event: BreakerEvent) -> None:
        raise RuntimeError("listener bug")

    breaker.add_listener(broken_listener)  # logged, never breaks the call

    @breaker
    def dep(fail: bool) -> None:
        if fail:
            raise Boom

    dep(False)
    with pytest.raises(Boom):
        dep(True)
    with pytest.raises(CircuitOpenError):
        dep(False)
    clock.advance(1)
    dep(False)
    kinds = [(e.kind, e.previous, e.state) for e in events]
    assert kinds == [
        ("success", None, State.CLOSED),
        ("state_change", State.CLOSED, State.OPEN),
        ("failure", None, State.OPEN),
        ("rejected", None, State.OPEN),
        ("state_change", State.OPEN, State.HALF_OPEN),
        ("state_change", State.HALF_OPEN, State.CLOSED),
        ("success", None, State.CLOSED),
    ]
    breaker.remove_listener(events.append)


def test_manual_controls_on_the_driver() -> None:
    clock = FakeClock()
    breaker = make(clock, failure_threshold=1)
    f = breaker(lambda: "ok")
    breaker.open()
    with pytest.raises(CircuitOpenError) as info:
        f()
    assert info.value.retry_after == math.inf and "by hand" in str(info.value)
    breaker.close()
    assert f() == "ok"
    breaker.open(timedelta(seconds=2))
    with pytest.raises(CircuitOpenError):
        f()
    clock.advance(2)
    assert f() == "ok"
    breaker.disable()
    g = breaker(lambda: (_ for _ in ()).throw(Boom()))
    for _ in range(3):
        with pytest.raises(Boom):
            g()
    assert breaker.state is State.DISABLED
    breaker.close()
    assert breaker.state is State.CLOSED


def test_slow_calls_measured_on_the_clock() -> None:
    clock = FakeClock()
    breaker = make(
        clock,
        failure_threshold=None,
        slow_call_duration=1.0,
        slow_call_rate_threshold=0.5,
        window_size=4,
        minimum_calls=2,
    )

    @breaker
    def dep(t: float) -> None:
        clock.advance(t)

    dep(0.1)
    dep(1.0)  # slow
    assert breaker.state is State.OPEN
    assert breaker.snapshot().window_calls == 0  # reset on the trip


def test_call_and_acall() -> None:
    breaker = make(FakeClock())
    assert breaker.call(lambda a, b: a + b, 1, 2) == 3

    async def add(a: int, b: int) -> int:
        return a + b

    assert asyncio.run(breaker.acall(add, 2, 3)) == 5


def test_circuit_breaker_decorator_and_registry() -> None:
    registry = BreakerRegistry()

    @circuit_breaker("solo", record=Boom, failure_threshold=1, registry=registry)
    def dep() -> None:
        raise Boom

    with pytest.raises(Boom):
        dep()
    snap = registry.snapshot()
    assert snap["solo"].state is State.OPEN and snap["solo"].failures == 1
    assert registry.get("solo") is primitive_of(dep, CircuitBreaker)
    with pytest.raises(ConfigurationError, match="already registered"):
        CircuitBreaker("solo", record=Boom, registry=registry)
    assert len(registry) == 1
    registry.unregister("solo")
    assert registry.get("solo") is None


def test_driver_validation() -> None:
    with pytest.raises(ConfigurationError, match="record"):
        CircuitBreaker("x", record=(Boom, "nope"))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="not both"):
        CircuitBreaker("x", record=Boom, policy=BreakerPolicy(), failure_threshold=2)
    with pytest.raises(ConfigurationError, match="unexpected keyword"):
        CircuitBreaker("x", record=Boom, failure_treshold=2)
    with pytest.raises(ConfigurationError, match="name"):
        CircuitBreaker("", record=Boom)
    with pytest.raises(TypeError):
        CircuitBreaker("x")  # type: ignore[call-arg]  # record is required


def test_cancellation_is_not_a_failure() -> None:
    breaker = make(FakeClock(), failure_threshold=1, record=Exception)

    @breaker
    async def dep() -> None:
        await asyncio.sleep(10)

    async def main() -> None:
        t = asyncio.create_task(dep())
        await asyncio.sleep(0)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t

    asyncio.run(main())
    assert breaker.state is State.CLOSED
    assert breaker.snapshot().ignored == 1

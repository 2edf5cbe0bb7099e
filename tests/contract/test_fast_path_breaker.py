"""The circuit breaker's fast path agrees with its state machine, call by call.

A closed breaker with nothing to time and no shared state does not ask its machine
to admit a call (a closed machine admits every call with its epoch, changing
nothing), and on a success with no failure run, no window and no listener it only
counts (the machine's ``record`` of such a success changes nothing). This test
drives a breaker's decorated function (sync and async) and, next to it, the bare
state machine through ``admit`` / ``record`` / ``record_probe`` / ``release_probe``
for every call, and compares the two after every step: state, epoch, failure
run, trips, open deadline, probes, window totals, transitions and counters.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalekit.errors import CircuitOpenError
from scalekit.resilience import BreakerPolicy, CircuitBreaker, State
from scalekit.testing import FakeClock


class Recorded(Exception):
    """A failure (``record=``)."""


class Ignored(Exception):
    """Neither success nor failure (``ignore=``)."""


class Other(Exception):
    """Not recorded: the dependency answered, a success."""


class Interrupt(BaseException):
    """Not an ``Exception`` (like a cancellation): ignored."""


_RAISES: dict[str, type[BaseException]] = {
    "recorded": Recorded,
    "ignored": Ignored,
    "other": Other,
    "interrupt": Interrupt,
}


#: the breaker's configurations, one test each: the fast path's branches differ by them
SHAPES = ["threshold", "bad_result", "listener", "count_window", "time_window"]


@st.composite
def _policies(draw: st.DrawFn, shape: str) -> BreakerPolicy:
    windowed = shape.endswith("_window")
    opts: dict[str, Any] = {
        "failure_threshold": draw(st.integers(1, 5) | st.none())
        if windowed
        else draw(st.integers(1, 5)),
        "open_duration": draw(st.sampled_from([0.5, 2.0, 30.0])),
        "half_open_max_calls": draw(st.integers(1, 3)),
        "probe_timeout": draw(st.sampled_from([0.05, 1.0, 60.0])),
        "jitter": draw(st.sampled_from([0.0, 0.5])),
    }
    if draw(st.booleans()):
        opts["max_open_duration"] = opts["open_duration"] * 4
    if windowed:
        opts["failure_rate_threshold"] = draw(st.sampled_from([0.2, 0.5, 1.0]))
        opts["minimum_calls"] = draw(st.integers(1, 6))
        if shape == "count_window":
            opts["window_size"] = draw(st.integers(1, 10))
        else:
            opts["window_duration"] = draw(st.sampled_from([1.0, 5.0]))
    return BreakerPolicy(**opts)


_steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("call"),
            st.sampled_from(["ok"] * 4 + ["bad_result", "recorded", "recorded", "other"])
            | st.sampled_from(["ignored", "interrupt"]),
            st.sampled_from([0.0, 0.0, 0.01, 0.3, 2.0]),  # the call's own duration
        ),
        st.tuples(st.just("advance"), st.none(), st.sampled_from([0.01, 0.2, 0.6, 1.5, 9.0, 40.0])),
        st.tuples(
            st.sampled_from(["open", "close", "disable"]), st.none(), st.none() | st.just(1.0)
        ),
    ),
    min_size=10,
    max_size=80,
)


class Reference:
    """The bare state machine, driven the way the breaker's general path drives it."""

    def __init__(self, breaker: CircuitBreaker, policy: BreakerPolicy, bad_result: bool) -> None:
        machine_type = type(breaker._m)
        # the machine's module by the machine itself (the module's name is private)
        mod = importlib.import_module(machine_type.__module__)
        self.ADMIT, self.PROBE, self.REJECT = mod.ADMIT, mod.PROBE, mod.REJECT
        self.m = machine_type(policy, lambda: 0.25)
        self.clock = FakeClock()
        self.bad_result = bad_result
        self.counts = {"calls": 0, "failures": 0, "ignored": 0, "rejected": 0}
        self.transitions: list[tuple[State, State]] = []

    def call(self, outcome: str, during: float) -> str:
        m, clock = self.m, self.clock
        kind, ticket = m.admit(clock.now())
        if kind == self.REJECT:
            self.counts["rejected"] += 1
            result = "rejected"
        else:
            clock.advance(during)
            now = clock.now()
            self.counts["calls"] += 1
            ignored = outcome in ("ignored", "interrupt")
            failed = outcome == "recorded" or (outcome == "bad_result" and self.bad_result)
            if ignored:
                self.counts["ignored"] += 1
                if kind == self.PROBE:
                    m.release_probe(int(ticket))
            else:
                self.counts["failures"] += failed
                if kind == self.PROBE:
                    m.record_probe(now, int(ticket), failed)
                else:
                    m.record(now, int(ticket), failed)
            result = outcome
        self._drain()
        return result

    def by_hand(self, action: str, duration: float | None) -> None:
        now = self.clock.now()
        if action == "open":
            self.m.force_open(now, duration)
        elif action == "close":
            self.m.close(now)
        else:
            self.m.disable(now)
        self._drain()

    def _drain(self) -> None:
        self.transitions += [(a, b) for a, b, _ in self.m.transitions]
        self.m.transitions.clear()


def _machine_view(m: Any) -> tuple[Any, ...]:
    w = m.window
    return (
        m.state,
        m.epoch,
        m.consecutive,
        m.trips,
        m.open_until,
        m.opened_at,
        dict(m.probes),
        m.half_open_admitted,
        m.half_open_successes,
        None if w is None else (w.calls, w.failures, w.slow),
    )


def _run(
    mode: str,
    policy: BreakerPolicy,
    bad_result: bool,
    listener: bool,
    steps: list[tuple[str, str | None, float | None]],
) -> None:
    clock = FakeClock()
    events: list[tuple[State | None, State]] = []
    breaker = CircuitBreaker(
        "fast-path",
        record=Recorded,
        ignore=Ignored,
        failure_result=(lambda r: r == "bad_result") if bad_result else None,
        policy=policy,
        clock=clock,
        rng=lambda: 0.25,
        listeners=(
            (lambda e: events.append((e.previous, e.state)) if e.kind == "state_change" else None,)
            if listener
            else ()
        ),
    )
    ref = Reference(breaker, policy, bad_result)

    def body(outcome: str, during: float) -> str:
        clock.advance(during)
        if outcome in _RAISES:
            raise _RAISES[outcome](outcome)
        return outcome

    async def abody(outcome: str, during: float) -> str:
        return body(outcome, during)

    call: Callable[[str, float], str] = breaker(body)
    acall = breaker(abody)
    loop = asyncio.new_event_loop() if mode == "async" else None

    def through_breaker(outcome: str, during: float) -> str:
        try:
            if loop is not None:
                return loop.run_until_complete(acall(outcome, during))
            return call(outcome, during)
        except CircuitOpenError:
            return "rejected"
        except (Recorded, Ignored, Other, Interrupt) as exc:
            return str(exc)

    try:
        for i, (op, outcome, arg) in enumerate(steps):
            where = f"step {i}: {op} {outcome or ''} {arg}"
            if op == "call":
                assert outcome is not None and arg is not None
                assert through_breaker(outcome, arg) == ref.call(outcome, arg), where
            elif op == "advance":
                assert arg is not None
                clock.advance(arg)
                ref.clock.advance(arg)
            else:
                getattr(breaker, op)(*((arg,) if op == "open" else ()))
                ref.by_hand(op, arg if op == "open" else None)
            assert clock.now() == ref.clock.now()
            assert _machine_view(breaker._m) == _machine_view(ref.m), where
            snap = breaker.snapshot()
            assert (snap.calls, snap.failures, snap.ignored, snap.rejected) == tuple(
                ref.counts.values()
            ), where
        entered = {s: 0 for s in State}
        for _, new in ref.transitions:
            entered[new] += 1
        assert {s: int(c.value) for s, c in breaker._transitions.items()} == entered
        if listener:
            assert events == ref.transitions
    finally:
        if loop is not None:
            loop.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("shape", SHAPES)
@settings(max_examples=100, deadline=None)
@given(data=st.data(), steps=_steps)
def test_breaker_fast_path_agrees_with_the_state_machine(
    mode: str, shape: str, data: st.DataObject, steps: list[tuple[str, str | None, float | None]]
) -> None:
    policy = data.draw(_policies(shape), "policy")
    _run(mode, policy, shape == "bad_result", shape == "listener", steps)


def test_the_fast_path_is_taken() -> None:
    """The property above tests the fast path only if a closed breaker takes it: a
    success on a closed, untimed, local breaker does not ask the machine to admit."""
    clock = FakeClock()
    breaker = CircuitBreaker("taken", record=Recorded, failure_threshold=3, clock=clock)
    machine = breaker._m
    admitted: list[float] = []
    admit = machine.admit

    class Spy(type(machine)):  # type: ignore[misc]
        __slots__ = ()

        def admit(self, now: float) -> tuple[int, float]:
            admitted.append(now)
            return admit(now)

    machine.__class__ = Spy

    @breaker
    def ok() -> int:
        return 1

    assert ok() == 1
    assert admitted == []
    breaker.open()
    with pytest.raises(CircuitOpenError):
        ok()
    assert len(admitted) == 1

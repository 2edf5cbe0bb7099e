"""Hypothesis: the breaker machine's invariants under any sequence of events."""

from __future__ import annotations

import math
from collections import deque

from hypothesis import given, settings
from hypothesis import strategies as st

from scalekit.resilience import BreakerPolicy, State
from scalekit.resilience._machine import (
    ADMIT,
    PROBE,
    REJECT,
    BreakerMachine,
    CountWindow,
    TimeWindow,
)

events = st.lists(
    st.one_of(
        st.tuples(st.just("admit"), st.just(0)),
        st.tuples(st.just("finish"), st.integers(0, 3)),  # outcome of a pending call
        st.tuples(st.just("advance"), st.integers(0, 30)),
    ),
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(
    ops=events,
    n=st.integers(1, 3),
    threshold=st.integers(1, 4),
    outcomes=st.lists(st.sampled_from(["ok", "fail", "ignored"]), min_size=1, max_size=50),
)
def test_machine_invariants(
    ops: list[tuple[str, int]], n: int, threshold: int, outcomes: list[str]
) -> None:
    m = BreakerMachine(
        BreakerPolicy(
            failure_threshold=threshold, open_duration=10, max_open_duration=40,
            half_open_max_calls=n, probe_timeout=15,
        ),
        rng=lambda: 0.0,
    )  # fmt: skip
    now = 0.0
    pending: list[tuple[int, float]] = []
    k = 0
    for op, arg in ops:
        if op == "advance":
            now += arg
        elif op == "admit":
            state_before, until = m.state, m.open_until
            kind, ticket = m.admit(now)
            if state_before is State.OPEN and now < until:
                assert kind == REJECT and ticket == until - now
            if kind == REJECT:
                assert ticket > 0 or m.state is State.HALF_OPEN
            else:
                pending.append((kind, ticket))
        elif pending:
            kind, ticket = pending.pop(arg % len(pending))
            outcome = outcomes[k % len(outcomes)]
            k += 1
            if kind == ADMIT:
                if outcome != "ignored":
                    m.record(now, int(ticket), outcome == "fail")
            elif outcome == "ignored":
                m.release_probe(int(ticket))
            else:
                m.record_probe(now, int(ticket), outcome == "fail")
        # invariants after every event
        assert len(m.probes) <= m.half_open_admitted <= n
        assert m.consecutive < threshold
        if m.state is not State.HALF_OPEN:
            assert not m.probes and m.half_open_admitted == 0
        if m.state is State.OPEN:
            assert 0 < m.open_until - (m.opened_at or 0) <= 40
    assert all(kind in (ADMIT, PROBE) for kind, _ in pending)


@settings(max_examples=300, deadline=None)
@given(
    size=st.integers(1, 20),
    outcomes=st.lists(st.tuples(st.booleans(), st.booleans()), max_size=100),
)
def test_count_window_matches_a_deque(size: int, outcomes: list[tuple[bool, bool]]) -> None:
    w = CountWindow(size)
    model: deque[tuple[bool, bool]] = deque(maxlen=size)
    for failed, slow in outcomes:
        w.add(0.0, failed, slow)
        model.append((failed, slow))
        assert w.calls == len(model)
        assert w.failures == sum(f for f, _ in model)
        assert w.slow == sum(s for _, s in model)


@settings(max_examples=300, deadline=None)
@given(
    duration=st.sampled_from([1.0, 10.0, 60.0]),
    steps=st.lists(st.tuples(st.floats(0, 20), st.booleans(), st.booleans()), max_size=100),
)
def test_time_window_matches_a_bucketed_log(
    duration: float, steps: list[tuple[float, bool, bool]]
) -> None:
    w = TimeWindow(duration)
    width = duration / 10
    log: list[tuple[int, bool, bool]] = []
    now = 1_700_000_000.0
    for dt, failed, slow in steps:
        now += dt
        w.add(now, failed, slow)
        cur = math.floor(now / width)
        log.append((cur, failed, slow))
        live = [(f, s) for b, f, s in log if b > cur - 10]
        assert w.calls == len(live)
        assert w.failures == sum(f for f, _ in live)
        assert w.slow == sum(s for _, s in live)

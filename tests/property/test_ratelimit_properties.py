"""Property tests: the rate-limit algorithms against textbook reference models.

Everything is driven through ``RateLimiter("memory://", ..., clock=FakeClock())``,
so the in-memory store's state handling (aligned windows, generation rotation,
dropping idle keys, all-or-nothing commits over several windows) is under test
together with the arithmetic in ``scalekit.ratelimit._algorithms``.

Exactness. The reference models compute in ``fractions.Fraction``, i.e. exactly.
To compare their allow/deny decisions with the implementation's *strictly* (no
"close enough" at any step), the model tests put every timestamp on a grid of
2**-10 s and choose rates whose arithmetic is exact in binary floating point on
that grid: periods are small binary fractions or small integers; for the token
bucket the refill rate ``limit/period`` is a power of two, for GCRA the emission
interval ``period/limit`` is. Then the implementation's floats are either exact
or (fixed/sliding window divisions by 3 or 5) so close to an exact value that
is at least 1/(1024*5) away from any decision boundary that rounding cannot flip
a decision, while exact ties (a bucket refilled to exactly ``cost`` tokens, a
window exactly at its limit) still happen all the time and are checked. The
implementation's deliberate 1 us slack (``algorithms.TIME_EPS``: a hit that fits
within a microsecond is allowed) cannot matter on a grid of ~1 ms either.

Arbitrary float times and rates are covered separately, with an explicit
tolerance (see ``test_token_bucket_and_gcra_with_arbitrary_floats``), and by the
retry/bounds properties, which do not compare with a model.

Hangs. A limiter call that never returns (a deadlock on the store's lock) would
hang the run; every test here runs under a watchdog (``no_hang``) that turns a
call taking more than HANG_SECONDS into a failure.
"""

from __future__ import annotations

import functools
import math
import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from fractions import Fraction
from typing import Any, Protocol, TypeVar, cast

import pytest
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st

from scalekit.ratelimit import ALGORITHMS, Decision, Policy, Rate, RateLimiter
from scalekit.ratelimit import _algorithms as alg
from scalekit.ratelimit._algorithms import Algorithm
from scalekit.ratelimit._memory import MemoryRateStore
from scalekit.testing import FakeClock

# Model-test timestamps are start + ticks / GRID, exact in a float; the starts are
# integers (exact as Fractions) at a monotonic-clock and a Unix-time magnitude.
STARTS = [1_000_000, 1_700_000_000]
GRID = 1024
WINDOWS = ("fixed_window", "sliding_window", "sliding_log")
BUCKETS = ("token_bucket", "gcra")

# Enough examples to find edge cases, sized so the whole file runs well under 30 s.
MODEL = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

HANG_SECONDS = 5.0
F = TypeVar("F", bound=Callable[..., Any])


class LimiterHung(BaseException):
    """Raised by the watchdog. A BaseException on purpose: Hypothesis re-raises it
    at once instead of shrinking, which would re-run (and re-hang) many examples."""


@contextmanager
def watchdog(seconds: float = HANG_SECONDS) -> Iterator[None]:
    """Fail, instead of hanging forever, if the body takes longer than ``seconds``.

    SIGALRM interrupts a blocked ``Lock.acquire`` in the main thread (POSIX)."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def fire(signum: int, frame: object) -> None:
        raise LimiterHung(f"a limiter call did not return within {seconds} s (deadlock?)")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def no_hang(fn: F) -> F:
    """Run each Hypothesis example under ``watchdog()`` (put it below ``@given``)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with watchdog():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def limiter(algorithm: str, rates: Sequence[Rate], clock: FakeClock) -> RateLimiter:
    return RateLimiter(
        "memory://",
        Policy(list(rates)),
        algorithm=cast(Algorithm, algorithm),
        clock=clock,
    )


def memory_store(lim: RateLimiter) -> MemoryRateStore:
    """The limiter's store (there is no public accessor for ``key_count``)."""
    store = lim._stores[None]
    assert isinstance(store, MemoryRateStore)
    return store


def cap(algorithm: str, rate: Rate) -> int:
    """The largest cost this window can ever allow."""
    return rate.capacity if algorithm in BUCKETS else rate.limit


# ---------------------------------------------------------------------------
# Reference models (exact, in Fractions). ``allows`` never changes the model;
# ``commit`` records an allowed hit.
# ---------------------------------------------------------------------------


class Ref(Protocol):
    cap: int

    def allows(self, now: Fraction, cost: int) -> bool: ...

    def commit(self, now: Fraction, cost: int) -> None: ...


def remaining(ref: Ref, now: Fraction) -> int:
    """What the window still allows now: the largest cost it would accept (or 0)."""
    return max((n for n in range(1, ref.cap + 1) if ref.allows(now, n)), default=0)


class FixedWindowRef:
    """At most ``limit`` per aligned window ``[k*period, (k+1)*period)``."""

    def __init__(self, rate: Rate) -> None:
        self.limit = self.cap = rate.limit
        self.period = Fraction(rate.period)
        self.counts: dict[int, int] = {}

    def allows(self, now: Fraction, cost: int) -> bool:
        return self.counts.get(math.floor(now / self.period), 0) + cost <= self.limit

    def commit(self, now: Fraction, cost: int) -> None:
        idx = math.floor(now / self.period)
        self.counts[idx] = self.counts.get(idx, 0) + cost


class SlidingWindowRef:
    """estimate = prev * (1 - elapsed/period) + cur over aligned windows."""

    def __init__(self, rate: Rate) -> None:
        self.limit = self.cap = rate.limit
        self.period = Fraction(rate.period)
        self.counts: dict[int, int] = {}

    def estimate(self, now: Fraction) -> Fraction:
        idx = math.floor(now / self.period)
        elapsed = now - idx * self.period
        prev = self.counts.get(idx - 1, 0)
        cur = self.counts.get(idx, 0)
        return prev * (1 - elapsed / self.period) + cur

    def allows(self, now: Fraction, cost: int) -> bool:
        return self.estimate(now) + cost <= self.limit

    def commit(self, now: Fraction, cost: int) -> None:
        idx = math.floor(now / self.period)
        self.counts[idx] = self.counts.get(idx, 0) + cost


class SlidingLogRef:
    """Every allowed hit at ``t`` counts during ``[t, t + period)``."""

    def __init__(self, rate: Rate) -> None:
        self.limit = self.cap = rate.limit
        self.period = Fraction(rate.period)
        self.log: list[tuple[Fraction, int]] = []

    def used(self, now: Fraction) -> int:
        return sum(c for t, c in self.log if t <= now < t + self.period)

    def allows(self, now: Fraction, cost: int) -> bool:
        return self.used(now) + cost <= self.limit

    def commit(self, now: Fraction, cost: int) -> None:
        self.log.append((now, cost))


class TokenBucketRef:
    """The textbook bucket: refill continuously, capped at capacity; allow iff enough."""

    def __init__(self, rate: Rate) -> None:
        self.cap = rate.capacity
        self.rate = Fraction(rate.limit) / Fraction(rate.period)
        self.tokens = Fraction(self.cap)
        self.last: Fraction | None = None

    def level(self, now: Fraction) -> Fraction:
        if self.last is None:
            return self.tokens
        return min(Fraction(self.cap), self.tokens + (now - self.last) * self.rate)

    def allows(self, now: Fraction, cost: int) -> bool:
        return self.level(now) >= cost

    def commit(self, now: Fraction, cost: int) -> None:
        self.tokens = self.level(now) - cost
        self.last = now


class GcraRef:
    """Virtual scheduling (ITU-T I.371): emission interval T, tolerance tau.

    A burst of ``burst`` back-to-back cells conforms, so ``tau = (burst - 1) * T``.
    A hit of cost n is n cells at the same instant, all or nothing: the last one
    must conform, ``max(TAT, now) + (n - 1) * T <= now + tau``.
    """

    def __init__(self, rate: Rate) -> None:
        self.cap = rate.capacity
        self.interval = Fraction(rate.period) / rate.limit
        self.tau = (rate.capacity - 1) * self.interval
        self.tat: Fraction | None = None

    def base(self, now: Fraction) -> Fraction:
        return now if self.tat is None or self.tat < now else self.tat

    def allows(self, now: Fraction, cost: int) -> bool:
        return self.base(now) + (cost - 1) * self.interval <= now + self.tau

    def commit(self, now: Fraction, cost: int) -> None:
        self.tat = self.base(now) + cost * self.interval


REFS: dict[str, Any] = {
    "fixed_window": FixedWindowRef,
    "sliding_window": SlidingWindowRef,
    "sliding_log": SlidingLogRef,
    "token_bucket": TokenBucketRef,
    "gcra": GcraRef,
}


# ---------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------

# Window periods: binary fractions and small integers (3 and 5 exercise inexact
# divisions whose results are still far from every decision boundary).
GRID_PERIODS = [Fraction(1, 2), Fraction(1), Fraction(3, 2), Fraction(2), Fraction(3), Fraction(5)]
POWERS_OF_TWO = [Fraction(1, 4), Fraction(1, 2), Fraction(1), Fraction(2), Fraction(4)]

grid_deltas = st.one_of(
    st.just(0),
    st.integers(1, 64),
    st.integers(0, GRID),
    st.integers(0, 8 * GRID),
    st.integers(0, 40 * GRID),
)


@st.composite
def grid_rates(draw: st.DrawFn, algorithm: str, n: int) -> list[Rate]:
    """``n`` rates (distinct periods) whose arithmetic is exact on the time grid."""
    rates: list[Rate] = []
    if algorithm in WINDOWS:
        periods = draw(st.lists(st.sampled_from(GRID_PERIODS), min_size=n, max_size=n, unique=True))
        rates = [Rate(draw(st.integers(1, 6)), float(p)) for p in periods]
    else:
        for _ in range(n):
            limit = draw(st.integers(1, 6))
            scale = draw(st.sampled_from(POWERS_OF_TWO))
            # token bucket: refill rate limit/period = scale; gcra: interval period/limit = scale
            period = limit / scale if algorithm == "token_bucket" else limit * scale
            burst = draw(st.none() | st.integers(1, 8))
            rates.append(Rate(limit, float(period), burst=burst))
        assume(len({r.period for r in rates}) == n)
    return rates


@st.composite
def grid_scenario(
    draw: st.DrawFn, algorithms: Sequence[str], n_rates: Sequence[int]
) -> tuple[str, list[Rate], list[tuple[int, int, int]], int]:
    algorithm = draw(st.sampled_from(list(algorithms)))
    rates = draw(grid_rates(algorithm, draw(st.sampled_from(list(n_rates)))))
    top = max(cap(algorithm, r) for r in rates) + 1
    costs = st.one_of(st.just(1), st.integers(1, top))
    events = draw(
        st.lists(st.tuples(grid_deltas, st.integers(0, 2), costs), min_size=1, max_size=60)
    )
    return algorithm, rates, events, draw(st.sampled_from(STARTS))


def run_against_models(
    algorithm: str, rates: list[Rate], events: list[tuple[int, int, int]], start: int
) -> None:
    """Run ``events`` (tick delta, key, cost) through the limiter and one exact
    reference model per (key, window); the limiter must allow a hit iff every
    window's model allows it, and the models only record hits the limiter allowed
    (so a denied hit must have consumed from no window: all-or-nothing)."""
    clock = FakeClock(start)
    lim = limiter(algorithm, rates, clock)
    refs: dict[str, list[Ref]] = {}
    ticks = 0
    for step, (delta, k, cost) in enumerate(events):
        ticks += delta
        clock.set(start + ticks / GRID)
        now = start + Fraction(ticks, GRID)
        key = f"k{k}"
        models = refs.setdefault(key, [REFS[algorithm](r) for r in rates])
        per_window = [m.allows(now, cost) for m in models]
        d = lim.hit(key, cost)
        note(f"step {step}: t=+{ticks}/{GRID} {key} cost={cost} -> {d} (models: {per_window})")
        assert d.allowed == all(per_window), f"step {step}: limiter and models disagree"
        if d.allowed:
            for m in models:
                m.commit(now, cost)
            assert d.retry_after == 0.0
            # the reported window is the one with the fewest remaining
            assert d.remaining == min(remaining(m, now) for m in models)
        elif len(rates) == 1:
            assert d.remaining == remaining(models[0], now)


# ---------------------------------------------------------------------------
# 1. Sliding log: never more than the limit in any window, and exact.
# ---------------------------------------------------------------------------

# Decisions are exact to a microsecond by design (``algorithms.TIME_EPS``: a log
# entry expires 1 us before its period is over, so that float rounding of times
# near 1.7e9, ~2.4e-7 s, never refuses a hit that fits exactly). So with
# arbitrary float times the checks below allow that slack plus rounding, and only
# in the direction the implementation documents; the grid model test checks the
# sliding log without any slack.
SLACK = alg.TIME_EPS + 1e-6


@MODEL
@given(
    limit=st.integers(1, 5),
    period=st.sampled_from([0.25, 0.3, 0.5, 0.7, 1.0, 1.5, 10.0]),
    data=st.data(),
)
@no_hang
def test_sliding_log_never_exceeds_the_limit_in_any_window_and_is_exact(
    limit: int, period: float, data: st.DataObject
) -> None:
    deltas = st.one_of(
        st.just(0.0),
        st.floats(0, 1e-3),
        st.floats(0, period / 2),
        st.floats(0, 2 * period),
        st.sampled_from([period, period / 2, period / 4]),
    )
    events = data.draw(
        st.lists(
            st.tuples(deltas, st.integers(0, 1), st.integers(1, limit + 1)),
            min_size=1,
            max_size=60,
        ),
        label="events",
    )
    clock = FakeClock()
    lim = limiter("sliding_log", [Rate(limit, period)], clock)
    p = Fraction(period)
    slack = Fraction(SLACK)
    allowed: dict[int, list[tuple[Fraction, int]]] = {0: [], 1: []}
    times: dict[int, list[Fraction]] = {0: [], 1: []}
    for step, (delta, k, cost) in enumerate(events):
        clock.advance(delta)
        now = Fraction(clock.now())
        # Exactly what is in the window ending now: hits at t with now in [t, t+period);
        used = sum(c for t, c in allowed[k] if now - p < t)
        # and in that window shortened by the slack.
        used_slack = sum(c for t, c in allowed[k] if now - p + slack < t)
        d = lim.hit(f"k{k}", cost)
        note(f"step {step}: now={clock.now()!r} k{k} cost={cost} used={used} -> {d}")
        if d.allowed:  # never more than the limit in a window (up to the slack)
            assert used_slack + cost <= limit, f"step {step}: allowed over the limit"
        else:  # exact: denied only if allowing would put more than `limit` in the window
            assert used + cost > limit, f"step {step}: denied though it fits"
        times[k].append(now)
        if d.allowed:
            allowed[k].append((now, cost))
    for k in (0, 1):
        for t0 in times[k]:
            end = t0 + p - slack
            in_window = sum(c for t, c in allowed[k] if t0 <= t < end)
            assert in_window <= limit, f"k{k}: {in_window} > {limit} in [{t0}, {end})"


# ---------------------------------------------------------------------------
# 2-5. Each algorithm, one window, against its reference model (exact grid).
# ---------------------------------------------------------------------------


@MODEL
@given(scenario=grid_scenario(ALGORITHMS, n_rates=[1]))
@no_hang
def test_single_window_matches_reference_model(
    scenario: tuple[str, list[Rate], list[tuple[int, int, int]], int],
) -> None:
    run_against_models(*scenario)


@FAST
@given(scenario=grid_scenario(BUCKETS, n_rates=[1]), burst=st.integers(1, 10))
@no_hang
def test_buckets_with_explicit_burst_match_reference_model(
    scenario: tuple[str, list[Rate], list[tuple[int, int, int]], int], burst: int
) -> None:
    algorithm, rates, events, start = scenario
    (r,) = rates
    run_against_models(algorithm, [Rate(r.limit, r.period, burst=burst)], events, start)


# ---------------------------------------------------------------------------
# 6. Several windows: all or nothing, for every algorithm.
# ---------------------------------------------------------------------------


@MODEL
@given(scenario=grid_scenario(ALGORITHMS, n_rates=[2]))
@no_hang
def test_multi_window_is_all_or_nothing(
    scenario: tuple[str, list[Rate], list[tuple[int, int, int]], int],
) -> None:
    run_against_models(*scenario)


@FAST
@given(algorithm=st.sampled_from(ALGORITHMS), data=st.data())
@no_hang
def test_multi_window_3_per_second_5_per_10_seconds(algorithm: str, data: st.DataObject) -> None:
    """The usual shape, "3/second; 5/10 seconds", with a few keys and costs.

    For the bucket algorithms 3/second is not exact in binary (refill rate 3/s,
    interval 1/3 s), so they run "4/second; 5/10 seconds" instead, which is.
    """
    first = Rate(4 if algorithm in BUCKETS else 3, 1.0)
    events = data.draw(
        st.lists(
            st.tuples(
                st.integers(0, 12).map(lambda eighths: eighths * GRID // 8) | grid_deltas,
                st.integers(0, 2),
                st.integers(1, 4),
            ),
            min_size=1,
            max_size=60,
        )
    )
    start = data.draw(st.sampled_from(STARTS))
    run_against_models(algorithm, [first, Rate(5, 10.0)], events, start)


# ---------------------------------------------------------------------------
# Token bucket and GCRA with arbitrary float times and rates (tolerance).
# ---------------------------------------------------------------------------

# In seconds: the 1 us slack the implementation allows by design, plus the
# rounding of its extrapolated timestamps near 1.7e9 (~1.2e-7 s per hit, which
# can accumulate over the <= 60 hits of an example).
TOLERANCE = 1e-5


@FAST
@given(
    algorithm=st.sampled_from(BUCKETS),
    limit=st.integers(1, 10),
    period=st.sampled_from([0.1, 0.3, 0.7, 1.0, 2.5, 7.0, 60.0]),
    burst=st.none() | st.integers(1, 12),
    data=st.data(),
)
@no_hang
def test_token_bucket_and_gcra_with_arbitrary_floats(
    algorithm: str, limit: int, period: float, burst: int | None, data: st.DataObject
) -> None:
    """Float reference models over arbitrary float times.

    Both sides now compute in floats, rounding differently (the implementation
    keeps one extrapolated timestamp near 1e6, the model a token count), so their
    values differ slightly, and the implementation allows a 1 us slack. The
    margin to the decision boundary is measured in seconds (how much earlier or
    later the same hit would flip); where it is below TOLERANCE either decision
    is accepted and the model follows the implementation's decision (a resync);
    everywhere else the decisions must be equal. A systematic error (wrong rate,
    wrong cap, lost or double-counted tokens) moves the margin by far more.
    """
    rate = Rate(limit, period, burst=burst)
    capacity = rate.capacity
    deltas = st.one_of(
        st.just(0.0),
        st.floats(0, 1e-3),
        st.floats(0, period / limit * 2),
        st.floats(0, period * 2),
    )
    events = data.draw(
        st.lists(st.tuples(deltas, st.integers(1, capacity + 1)), min_size=1, max_size=60)
    )
    clock = FakeClock()
    lim = limiter(algorithm, [rate], clock)
    r = limit / period
    interval = period / limit
    tokens, last = float(capacity), clock.now()  # token bucket model
    tat = clock.now()  # GCRA model
    for step, (delta, cost) in enumerate(events):
        now = clock.advance(delta)
        if algorithm == "token_bucket":
            tokens = min(float(capacity), tokens + (now - last) * r)
            last = now
            margin = (tokens - cost) / r
        else:
            base = max(tat, now)
            margin = (now + (capacity - 1) * interval) - (base + (cost - 1) * interval)
        d = lim.hit("k", cost)
        note(f"step {step}: now={now!r} cost={cost} margin={margin!r} -> {d}")
        if cost > capacity:
            assert not d.allowed
        elif abs(margin) >= TOLERANCE:
            assert d.allowed == (margin >= 0), f"step {step}"
        if d.allowed:  # commit (or resync to) the implementation's decision
            if algorithm == "token_bucket":
                tokens = max(0.0, tokens - cost)
            else:
                tat = max(tat, now) + cost * interval


# ---------------------------------------------------------------------------
# 7. retry_after, bounds, inf for impossible costs, peek.
# ---------------------------------------------------------------------------

ANY_PERIODS = [0.25, 0.3, 0.7, 1.0, 1.5, 2.0, 10.0, 60.0]


@st.composite
def any_rates(draw: st.DrawFn, algorithm: str) -> list[Rate]:
    periods = draw(st.lists(st.sampled_from(ANY_PERIODS), min_size=1, max_size=2, unique=True))
    bursts = st.none() | st.integers(1, 10) if algorithm in BUCKETS else st.none()
    return [Rate(draw(st.integers(1, 8)), p, burst=draw(bursts)) for p in periods]


@st.composite
def float_scenario(
    draw: st.DrawFn,
) -> tuple[str, list[Rate], list[tuple[float, int, int, bool]]]:
    algorithm = draw(st.sampled_from(ALGORITHMS))
    rates = draw(any_rates(algorithm))
    shortest = min(r.period for r in rates)
    longest = max(r.period for r in rates)
    top = max(cap(algorithm, r) for r in rates) + 1
    deltas = st.one_of(
        st.just(0.0),
        st.floats(0, shortest / 4),
        st.floats(0, 2 * shortest),
        st.floats(0, 1.2 * longest),
    )
    events = draw(
        st.lists(
            st.tuples(
                deltas, st.integers(0, 2), st.one_of(st.just(1), st.integers(1, top)), st.booleans()
            ),
            min_size=1,
            max_size=40,
        )
    )
    return algorithm, rates, events


def check_decision(algorithm: str, rates: list[Rate], cost: int, d: Decision) -> None:
    assert d.retry_after >= 0.0
    assert d.reset_after >= 0.0
    reported = [r for r in rates if (r.limit, r.period) == (d.limit, d.period)]
    assert reported, f"{d} does not report one of the policy's windows"
    # remaining is within [0, limit]; a bucket with burst > limit can hold (and so
    # report) up to its burst, which is what "remaining" means for it.
    assert 0 <= d.remaining <= max(d.limit, cap(algorithm, reported[0]))
    if d.allowed:
        assert d.retry_after == 0.0
    if cost > min(cap(algorithm, r) for r in rates):
        assert not d.allowed
        assert d.retry_after == math.inf, "a cost above the limit/burst can never fit"
    elif not d.allowed:
        assert math.isfinite(d.retry_after)


@MODEL
@given(scenario=float_scenario())
@no_hang
def test_retry_after_is_sufficient_and_tight_and_decisions_are_bounded(
    scenario: tuple[str, list[Rate], list[tuple[float, int, int, bool]]],
) -> None:
    algorithm, rates, events = scenario
    clock = FakeClock()
    lim = limiter(algorithm, rates, clock)
    for step, (delta, k, cost, follow) in enumerate(events):
        clock.advance(delta)
        key = f"k{k}"
        d = lim.hit(key, cost)
        note(f"step {step}: now={clock.now()!r} {key} cost={cost} -> {d}")
        check_decision(algorithm, rates, cost, d)
        if d.allowed or not follow or math.isinf(d.retry_after):
            continue
        wait = d.retry_after
        if wait > 2e-3:
            clock.advance(wait - 1e-3)
            early = lim.hit(key, cost)
            note(f"  1 ms before retry_after: {early}")
            assert not early.allowed, f"step {step}: allowed 1 ms before retry_after={wait}"
            check_decision(algorithm, rates, cost, early)
            clock.advance(1e-3 + 1e-6)
        else:
            clock.advance(wait + 1e-6)
        again = lim.hit(key, cost)
        note(f"  after retry_after: {again}")
        assert again.allowed, f"step {step}: still denied after retry_after={wait}"


@MODEL
@given(
    scenario=float_scenario(),
    peeks=st.lists(st.tuples(st.booleans(), st.integers(0, 2), st.integers(1, 10)), max_size=40),
)
@no_hang
def test_peek_changes_nothing_and_predicts_the_hit(
    scenario: tuple[str, list[Rate], list[tuple[float, int, int, bool]]],
    peeks: list[tuple[bool, int, int]],
) -> None:
    """Two limiters on one clock see the same hits; one also gets peeks (of the same
    or other keys and costs) before hits. Every hit's decision must be identical,
    and a peek of exactly the next hit must predict it."""
    algorithm, rates, events = scenario
    clock = FakeClock()
    peeked = limiter(algorithm, rates, clock)
    plain = limiter(algorithm, rates, clock)
    for step, (delta, k, cost, same) in enumerate(events):
        clock.advance(delta)
        key = f"k{k}"
        p = None
        if step < len(peeks) and peeks[step][0]:
            pk, pc = (k, cost) if same else peeks[step][1:]
            p = peeked.peek(f"k{pk}", pc)
            check_decision(algorithm, rates, pc, p)
        a = peeked.hit(key, cost)
        b = plain.hit(key, cost)
        note(f"step {step}: {key} cost={cost} peek={p} -> {a} / {b}")
        assert a == b, f"step {step}: an earlier peek changed a decision"
        if p is not None and same:
            assert p.allowed == a.allowed, f"step {step}: peek did not predict the hit"
            if not a.allowed:
                assert p.retry_after == a.retry_after


@settings(MODEL, max_examples=600)
@given(
    algorithm=st.sampled_from(ALGORITHMS),
    limit=st.sampled_from([10**5, 10**6, 10**7, 10**8]),
    period=st.sampled_from([0.5, 1.0, 60.0]),
    data=st.data(),
)
@no_hang
def test_decisions_are_bounded_at_high_rates(
    algorithm: str, limit: int, period: float, data: st.DataObject
) -> None:
    """Rates of millions per second (bytes, say, with cost = size): there the 1 us
    slack of the decisions is worth several units, and times a few emission
    intervals apart are below the float resolution of times near 1.7e9."""
    rate = Rate(limit, period)
    interval = period / limit
    deltas = st.one_of(
        st.integers(0, 30).map(lambda n: n * interval),
        st.floats(0, 1e-5),
        st.floats(0, period),
    )
    costs = st.one_of(
        st.just(limit),
        st.integers(1, 30),
        st.integers(1, limit),
        st.integers(limit + 1, limit + 30),
    )
    events = data.draw(st.lists(st.tuples(deltas, costs), min_size=1, max_size=30))
    clock = FakeClock()
    lim = limiter(algorithm, [rate], clock)
    for step, (delta, cost) in enumerate(events):
        clock.advance(delta)
        d = lim.hit("k", cost)
        note(f"step {step}: now={clock.now()!r} cost={cost} -> {d}")
        check_decision(algorithm, [rate], cost, d)


# ---------------------------------------------------------------------------
# 8. Idle keys are dropped and get their full limit back.
# ---------------------------------------------------------------------------


def idle_time(algorithm: str, rates: list[Rate]) -> float:
    """Time after the last hit after which a key's state is gone from the store.

    The store keeps keys in two generations of ``period`` (log) or the refill time
    ``burst * period / limit`` (buckets), and the sliding window counter keeps the
    previous aligned window: so twice the longest of those, plus a margin.
    """
    lengths = [r.capacity * r.period / r.limit if algorithm in BUCKETS else r.period for r in rates]
    return 2 * max(lengths) + 1e-3


@FAST
@given(
    algorithm=st.sampled_from(ALGORITHMS),
    data=st.data(),
    n_keys=st.integers(5, 40),
)
@no_hang
def test_idle_keys_are_dropped_and_get_their_full_limit_back(
    algorithm: str, data: st.DataObject, n_keys: int
) -> None:
    rates = data.draw(any_rates(algorithm), label="rates")
    shortest = min(r.period for r in rates)
    hits = data.draw(
        st.lists(
            st.tuples(st.floats(0, shortest / 2), st.integers(0, n_keys - 1), st.integers(1, 3)),
            min_size=n_keys,
            max_size=3 * n_keys,
        ),
        label="hits",
    )
    clock = FakeClock()
    lim = limiter(algorithm, rates, clock)
    store = memory_store(lim)
    for k in range(n_keys):  # every key at least once
        lim.hit(f"k{k}")
    for delta, k, cost in hits:
        clock.advance(delta)
        lim.hit(f"k{k}", cost)
    clock.advance(idle_time(algorithm, rates))
    lim.hit("fresh")  # one call after the advance (rotates the generations)
    assert store.key_count() <= 1, f"{store.key_count()} keys held after every key went idle"
    full = min(cap(algorithm, r) for r in rates)
    for k in range(n_keys):
        p = lim.peek(f"k{k}", full)
        assert p.allowed, f"k{k} did not get its full limit back: {p}"
        assert p.remaining == full
        assert lim.hit(f"k{k}", full).allowed


def retention(algorithm: str, rates: list[Rate]) -> float:
    """How long the store can hold an untouched key, by design.

    Fixed window: the current aligned window only (< period). Sliding window: the
    current and the previous aligned windows (< 2 periods). Generations (log,
    buckets) rotate lazily, on the first call at least one generation length L
    after the last rotation; the previous generation survives a rotation when it
    came less than 2L after the one before, and then lives until the next one,
    up to L later: a key touched right after a rotation can be held for up to 3L.
    """
    if algorithm == "fixed_window":
        return max(r.period for r in rates)
    if algorithm == "sliding_window":
        return 2 * max(r.period for r in rates)
    lengths = [r.capacity * r.period / r.limit if algorithm in BUCKETS else r.period for r in rates]
    return 3 * max(lengths)


@FAST
@given(
    algorithm=st.sampled_from(ALGORITHMS),
    data=st.data(),
    n_keys=st.integers(1, 20),
    gaps=st.lists(st.floats(0, 1.5), min_size=1, max_size=30),
)
@no_hang
def test_key_count_is_bounded_by_the_keys_recently_touched(
    algorithm: str, data: st.DataObject, n_keys: int, gaps: list[float]
) -> None:
    """At any time the store holds at most the keys touched within ``retention``."""
    policy = data.draw(any_rates(algorithm))
    horizon = retention(algorithm, policy)
    clock = FakeClock()
    lim = limiter(algorithm, policy, clock)
    store = memory_store(lim)
    touched: list[tuple[float, str]] = []
    for i, gap in enumerate(gaps):
        now = clock.advance(gap * horizon)
        for j in range(n_keys):
            key = f"g{i}k{j}"
            lim.hit(key)
            touched.append((now, key))
        recent = {key for t, key in touched if now - t < horizon + 1e-6}
        assert store.key_count() <= len(recent)


# ---------------------------------------------------------------------------
# combine(), directly.
# ---------------------------------------------------------------------------

window_result = st.tuples(
    st.booleans(),
    st.integers(0, 10),
    st.floats(0, 100),
    st.floats(0, 100) | st.just(math.inf),
    st.none(),
)


@FAST
@given(results=st.lists(window_result, min_size=1, max_size=4))
@no_hang
def test_combine_is_all_or_nothing_and_reports_the_binding_window(
    results: list[tuple[bool, int, float, float, None]],
) -> None:
    results = [(ok, rem, reset, 0.0 if ok else retry, s) for ok, rem, reset, retry, s in results]
    limits = [(i + 1, float(10 * (i + 1))) for i in range(len(results))]
    d = alg.combine(results, limits, "p")
    assert d.allowed == all(r[0] for r in results)
    if d.allowed:
        assert d.retry_after == 0.0
        assert d.remaining == min(r[1] for r in results)
    else:
        assert d.retry_after == max(r[3] for r in results if not r[0])
    i = limits.index((d.limit, d.period))
    assert results[i][1] == d.remaining
    assert results[i][0] == d.allowed


# ---------------------------------------------------------------------------
# Minimal reproductions of what the properties above found.
# ---------------------------------------------------------------------------


def test_gcra_hit_on_a_key_of_the_previous_generation_returns() -> None:
    """A key whose state sits in the previous generation (the commonest way to come
    back after a pause) must be decided, not hang."""
    clock = FakeClock()
    lim = limiter("gcra", [Rate(1, 1.0)], clock)
    with watchdog(5.0):
        assert lim.hit("a").allowed
        clock.advance(1.5)  # the next call rotates: "a" moves to the previous generation
        assert lim.hit("b").allowed
        assert lim.hit("a").allowed


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_new_key_refused_by_a_full_store_returns(algorithm: str) -> None:
    clock = FakeClock()
    lim = RateLimiter(
        "memory://?max_keys=1",
        "5/second",
        algorithm=cast(Algorithm, algorithm),
        clock=clock,
        on_backend_error="fail_closed",
    )
    with watchdog(5.0):
        assert lim.hit("a").allowed
        assert not lim.hit("b").allowed  # the store is full: fail_closed refuses


def test_gcra_admits_no_extra_unit_at_a_high_rate() -> None:
    """At 10M/second the emission interval (1e-7 s) is below the 1 us slack: the slack
    used to admit 10 extra units per instant. A hit 2 units too many is refused now,
    and remaining is never negative."""
    clock = FakeClock()
    lim = limiter("gcra", [Rate(10_000_000, 1.0)], clock)
    assert lim.hit("k", 10_000_000).allowed  # the whole burst: tat = now + 1 s
    d = lim.hit("k", 1)  # the same instant: nothing has dripped back
    assert not d.allowed, d
    assert d.remaining == 0, d
    assert d.remaining == lim.peek("k").remaining  # what the generic path reports


@pytest.mark.parametrize("algorithm", BUCKETS)
@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(1, 10**12),
    period=st.sampled_from([1e-3, 0.5, 1.0, 60.0]),
    burst=st.integers(1, 10**6),
    first=st.integers(1, 10**6),
)
def test_buckets_admit_at_most_the_burst_at_one_instant(
    algorithm: str, limit: int, period: float, burst: int, first: int
) -> None:
    """At any rate (up to 10**12 per millisecond), one instant admits exactly ``burst``."""
    lim = limiter(algorithm, [Rate(limit, period, burst=burst)], FakeClock())
    first = min(first, burst)
    assert lim.hit("k", first).allowed
    if first < burst:
        assert lim.hit("k", burst - first).allowed
    d = lim.hit("k", 1)
    assert not d.allowed, (limit, period, burst, d)
    assert d.remaining == 0


@pytest.mark.parametrize("algorithm", BUCKETS)
def test_a_cost_above_the_burst_is_refused_at_a_high_rate(algorithm: str) -> None:
    """2M/second: one microsecond refills 2 units. The 1 us slack must not let a
    cost above the bucket's capacity through (it can never fit: retry_after inf)."""
    lim = limiter(algorithm, [Rate(1_000_000, 0.5)], FakeClock())
    d = lim.hit("k", 1_000_002)
    assert not d.allowed, d
    assert d.retry_after == math.inf


@pytest.mark.parametrize("algorithm", BUCKETS)
def test_remaining_is_at_most_the_capacity_at_a_high_rate(algorithm: str) -> None:
    """A bucket of 1M never has more than 1M left, whatever the 1 us grace is worth."""
    lim = limiter(algorithm, [Rate(1_000_000, 0.5)], FakeClock())
    assert lim.peek("k").remaining <= 1_000_000
    d = lim.hit("k", 1)
    assert d.allowed
    assert d.remaining <= 1_000_000, d

"""The cache's freshness rules (``scalekit.cache._freshness``): exact boundaries and
properties.

Exactness. The model tests put every time and duration on a grid of 2**-10 s with
magnitudes below 2**31 s, so every sum the implementation computes
(``stored_at + ttl + stale_while_revalidate`` ...) is exact in binary floating
point; the reference model computes in ``fractions.Fraction`` and the two are
compared strictly, exact ties on every boundary included. Arbitrary floats are
covered by the properties that do not need a model (monotonicity, consistency of
``classify`` with ``plan_after_load_failure`` and ``retain_until``).

XFetch. Its boundary ``now - delta * beta * ln(rand) >= expiry`` involves a
logarithm, so it is checked exactly in ``Fraction`` against bounds that allow
1e-12 relative error in ``delta * beta * ln(rand)`` (a few ulps), and its
probability law against the analytic ``exp(-(expiry - t) / (delta * beta))``
with a seeded RNG and 5-sigma binomial bounds.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import re
from datetime import timedelta
from fractions import Fraction
from typing import Any, cast

import pytest
from hypothesis import assume, example, given, note, settings
from hypothesis import strategies as st

from scalekit.cache._freshness import (
    MIN_REMAINING_TTL,
    EntryMeta,
    Freshness,
    classify,
    next_refresh_at,
    plan_after_load_failure,
    remaining_ttl,
)
from scalekit.errors import ConfigurationError
from scalekit.testing import FakeClock

F = Freshness
ORDER = list(Freshness)  # declared in the order an entry passes through them
RANK = {state: i for i, state in enumerate(ORDER)}

FAST = settings(max_examples=300, deadline=None)
SLOW = settings(max_examples=25, deadline=None)


def before(x: float) -> float:
    """The largest float below ``x``."""
    return math.nextafter(x, -math.inf)


# ---------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------

GRID = 1024
STARTS = [0, 1_000_000, 1_700_000_000]  # a monotonic-clock and a Unix-time magnitude


def ticks(max_ticks: int) -> st.SearchStrategy[float]:
    """Non-negative grid durations, zero often."""
    return st.one_of(st.just(0.0), st.integers(1, max_ticks).map(lambda k: k / GRID))


@st.composite
def grid_metas(draw: st.DrawFn) -> EntryMeta:
    start = draw(st.sampled_from(STARTS))
    return EntryMeta(
        stored_at=start + draw(st.integers(-(2**20), 2**20)) / GRID,
        ttl=draw(ticks(2**20)),
        stale_while_revalidate=draw(ticks(2**20)),
        stale_if_error=draw(ticks(2**20)),
        delta=draw(ticks(2**16)),
        generation=draw(st.integers(0, 2**40)),
    )


def float_durations(hi: float = 1e7) -> st.SearchStrategy[float]:
    return st.one_of(
        st.just(0.0),
        st.floats(min_value=0.0, max_value=hi),
        st.floats(min_value=0.0, max_value=1e-3),
    )


@st.composite
def float_metas(draw: st.DrawFn) -> EntryMeta:
    return EntryMeta(
        stored_at=draw(
            st.one_of(
                st.floats(min_value=-1e9, max_value=2e9),
                st.sampled_from([0.0, 1_700_000_000.0, 12345.678]),
            )
        ),
        ttl=draw(float_durations()),
        stale_while_revalidate=draw(float_durations()),
        stale_if_error=draw(float_durations()),
        delta=draw(float_durations(1e4)),
    )


rands = st.one_of(
    st.sampled_from([0.0, 1.0, 0.5, 5e-324, before(1.0)]),
    st.floats(min_value=0.0, max_value=1.0),
)
betas = st.one_of(st.sampled_from([0.0, 1.0]), st.floats(min_value=0.0, max_value=10.0))


def boundaries(meta: EntryMeta) -> list[float]:
    """Every boundary time of ``meta`` and the float just below it."""
    e = meta.expires_at
    points = [
        meta.stored_at,
        e,
        e + meta.stale_while_revalidate,
        e + meta.stale_if_error,
        meta.retain_until,
    ]
    return points + [before(p) for p in points]


@st.composite
def times_around(draw: st.DrawFn, meta: EntryMeta) -> list[float]:
    """Times spread over (and a little beyond) the whole life of ``meta``."""
    span = max(meta.retain_until - meta.stored_at, 1.0)
    offsets = draw(st.lists(st.floats(min_value=-0.5 * span, max_value=2.0 * span), max_size=30))
    return [meta.stored_at + o for o in offsets] + boundaries(meta)


# ---------------------------------------------------------------------------
# Reference model (exact)
# ---------------------------------------------------------------------------


def reference(meta: EntryMeta, now: float) -> Freshness:
    """RFC 5861 in terms of staleness (``age - ttl``), computed exactly; no XFetch."""
    staleness = Fraction(now) - Fraction(meta.stored_at) - Fraction(meta.ttl)
    if staleness < 0:
        return F.FRESH
    if staleness < Fraction(meta.stale_while_revalidate):
        return F.STALE_REVALIDATE
    if staleness < Fraction(meta.stale_if_error):
        return F.STALE_IF_ERROR_ONLY
    return F.EXPIRED


# ---------------------------------------------------------------------------
# Exact boundaries (unit tests)
# ---------------------------------------------------------------------------

T0 = 1_700_000_000.0


def test_every_boundary_on_exact_times() -> None:
    meta = EntryMeta(stored_at=T0, ttl=8.0, stale_while_revalidate=4.0, stale_if_error=16.0)
    e = T0 + 8.0
    assert meta.expires_at == e
    assert meta.retain_until == e + 16.0
    expected = [
        (before(T0), F.FRESH),  # clock skew: age below zero is fresh
        (T0, F.FRESH),
        (before(e), F.FRESH),
        (e, F.STALE_REVALIDATE),  # half-open: fresh while now < stored_at + ttl
        (before(e + 4.0), F.STALE_REVALIDATE),
        (e + 4.0, F.STALE_IF_ERROR_ONLY),
        (before(e + 16.0), F.STALE_IF_ERROR_ONLY),
        (e + 16.0, F.EXPIRED),
        (e + 1e6, F.EXPIRED),
    ]
    for now, state in expected:
        assert classify(meta, now) is state, now
        assert classify(meta, now, beta=0.0, rand=0.0) is state, now
        assert plan_after_load_failure(meta, now) is (state is not F.EXPIRED), now


def test_stale_if_error_not_longer_than_swr_adds_nothing() -> None:
    for sie in (0.0, 2.0, 4.0):
        meta = EntryMeta(stored_at=T0, ttl=8.0, stale_while_revalidate=4.0, stale_if_error=sie)
        e = T0 + 8.0
        assert classify(meta, before(e)) is F.FRESH
        assert classify(meta, e) is F.STALE_REVALIDATE
        assert classify(meta, before(e + 4.0)) is F.STALE_REVALIDATE
        assert classify(meta, e + 4.0) is F.EXPIRED
        assert meta.retain_until == e + 4.0
        assert plan_after_load_failure(meta, before(e + 4.0))
        assert not plan_after_load_failure(meta, e + 4.0)


def test_stale_if_error_without_swr() -> None:
    meta = EntryMeta(stored_at=T0, ttl=8.0, stale_if_error=16.0)
    e = T0 + 8.0
    assert classify(meta, before(e)) is F.FRESH
    assert classify(meta, e) is F.STALE_IF_ERROR_ONLY
    assert classify(meta, before(e + 16.0)) is F.STALE_IF_ERROR_ONLY
    assert classify(meta, e + 16.0) is F.EXPIRED


def test_no_stale_windows_expires_at_ttl() -> None:
    meta = EntryMeta(stored_at=T0, ttl=8.0)
    assert classify(meta, before(T0 + 8.0)) is F.FRESH
    assert classify(meta, T0 + 8.0) is F.EXPIRED
    assert plan_after_load_failure(meta, before(T0 + 8.0))
    assert not plan_after_load_failure(meta, T0 + 8.0)


def test_zero_ttl_is_never_fresh_but_can_be_served_stale() -> None:
    meta = EntryMeta(stored_at=T0, ttl=0.0, stale_while_revalidate=30.0)
    assert classify(meta, before(T0)) is F.FRESH  # only through clock skew
    assert classify(meta, T0) is F.STALE_REVALIDATE
    assert classify(meta, T0 + 30.0) is F.EXPIRED
    assert classify(EntryMeta(stored_at=T0, ttl=0.0), T0) is F.EXPIRED


def test_nan_now_is_expired() -> None:
    meta = EntryMeta(stored_at=T0, ttl=8.0, stale_while_revalidate=4.0, stale_if_error=16.0)
    assert classify(meta, math.nan) is F.EXPIRED
    assert not plan_after_load_failure(meta, math.nan)


def test_freshness_actions() -> None:
    table = {
        F.FRESH: (True, False, False),
        F.FRESH_EARLY_REFRESH: (True, True, False),
        F.STALE_REVALIDATE: (True, True, False),
        F.STALE_IF_ERROR_ONLY: (False, False, True),
        F.EXPIRED: (False, False, True),
    }
    assert set(table) == set(Freshness)
    for state, (servable, needs_refresh, must_load) in table.items():
        assert (state.servable, state.needs_refresh, state.must_load) == (
            servable,
            needs_refresh,
            must_load,
        )
    assert ORDER == [
        F.FRESH,
        F.FRESH_EARLY_REFRESH,
        F.STALE_REVALIDATE,
        F.STALE_IF_ERROR_ONLY,
        F.EXPIRED,
    ]
    assert f"{F.STALE_REVALIDATE}" == "stale_revalidate"  # usable as a metric label


# -- XFetch on exact times ----------------------------------------------------


def _first_trigger(now: float, shift: float, expiry: float) -> float:
    """The smallest float ``t`` near ``now`` with ``t - shift >= expiry``."""
    t = now
    while t - shift >= expiry:
        t = before(t)
    while not t - shift >= expiry:
        t = math.nextafter(t, math.inf)
    return t


@pytest.mark.parametrize(
    ("stored_at", "ttl", "delta", "beta", "rand"),
    [
        (1000.0, 24.0, 2.0, 1.0, 0.5),
        (T0, 300.0, 0.25, 1.0, 0.1),
        (T0, 300.0, 0.25, 3.0, 0.9),
        (1e6 + 0.1, 60.0, 1.7, 0.3, 1e-9),
        (0.0, 1.0, 1e-3, 1.0, 0.999),
    ],
)
def test_xfetch_threshold_is_inclusive_on_exact_floats(
    stored_at: float, ttl: float, delta: float, beta: float, rand: float
) -> None:
    meta = EntryMeta(stored_at=stored_at, ttl=ttl, delta=delta)
    e = meta.expires_at
    shift = delta * beta * math.log(rand)  # <= 0
    t = _first_trigger(e + shift, shift, e)
    assert t < e
    assert classify(meta, t, beta=beta, rand=rand) is F.FRESH_EARLY_REFRESH
    assert classify(meta, before(t), beta=beta, rand=rand) is F.FRESH
    assert classify(meta, before(e), beta=beta, rand=rand) is F.FRESH_EARLY_REFRESH
    assert classify(meta, e, beta=beta, rand=rand) is F.EXPIRED  # never early after expiry
    # the early window is -delta*beta*ln(rand) long (to within float rounding)
    assert e - t == pytest.approx(-shift, rel=1e-9, abs=4 * (e - before(e)))


def test_xfetch_worked_example() -> None:
    # expiry 1024, delta 2 s, beta 1, rand 0.5: early from 1024 - 2 ln 2 = 1022.6137...
    meta = EntryMeta(stored_at=1000.0, ttl=24.0, delta=2.0)
    assert classify(meta, 1022.6, rand=0.5) is F.FRESH
    assert classify(meta, 1022.62, rand=0.5) is F.FRESH_EARLY_REFRESH
    # beta scales the window: with beta 2 it starts 4 ln 2 = 2.77 s before expiry
    assert classify(meta, 1021.3, beta=2.0, rand=0.5) is F.FRESH_EARLY_REFRESH
    assert classify(meta, 1021.2, beta=2.0, rand=0.5) is F.FRESH


def test_xfetch_disabled_and_limits() -> None:
    meta = EntryMeta(stored_at=T0, ttl=60.0, delta=5.0)
    no_delta = EntryMeta(stored_at=T0, ttl=60.0)
    for now in (before(T0), T0, T0 + 30.0, before(T0 + 60.0)):
        assert classify(meta, now) is F.FRESH  # default rand = 1: ln(1) = 0
        assert classify(meta, now, rand=1.0, beta=100.0) is F.FRESH
        assert classify(meta, now, beta=0.0, rand=0.0) is F.FRESH
        assert classify(meta, now, beta=0.0, rand=1e-300) is F.FRESH
        assert classify(no_delta, now, rand=0.0) is F.FRESH
        assert classify(no_delta, now, beta=10.0, rand=5e-324) is F.FRESH
        # rand = 0 is the limit ln(rand) -> -inf: always early while fresh
        assert classify(meta, now, rand=0.0) is F.FRESH_EARLY_REFRESH
        assert classify(meta, now, rand=5e-324, beta=1e3) is F.FRESH_EARLY_REFRESH
    assert classify(meta, T0 + 60.0, rand=0.0) is F.EXPIRED


@pytest.mark.parametrize("beta", [-1.0, -1e-300, math.nan, math.inf, -math.inf])
def test_bad_beta(beta: float) -> None:
    meta = EntryMeta(stored_at=T0, ttl=60.0, delta=5.0)
    with pytest.raises(ConfigurationError, match=r"beta must be a finite number >= 0, got"):
        classify(meta, T0, beta=beta)


@pytest.mark.parametrize("rand", [-0.1, -1e-300, 1.0000000000000002, 2.0, math.nan, math.inf])
def test_bad_rand(rand: float) -> None:
    meta = EntryMeta(stored_at=T0, ttl=60.0, delta=5.0)
    with pytest.raises(
        ConfigurationError, match=r"rand must be a uniform random number in \(0, 1\]"
    ):
        classify(meta, T0, rand=rand)


# -- remaining_ttl, next_refresh_at -------------------------------------------


def test_remaining_ttl() -> None:
    meta = EntryMeta(stored_at=T0, ttl=8.0, stale_while_revalidate=4.0, stale_if_error=16.0)
    assert remaining_ttl(meta, T0) == 24.0
    assert remaining_ttl(meta, T0 + 10.0) == 14.0
    assert remaining_ttl(meta, T0 - 1.0) == 25.0
    assert remaining_ttl(meta, T0 + 24.0 - 0.5) == 0.5
    assert remaining_ttl(meta, T0 + 24.0) == MIN_REMAINING_TTL == 0.001
    assert remaining_ttl(meta, T0 + 1e6) == MIN_REMAINING_TTL
    swr_longer = dataclasses.replace(meta, stale_if_error=2.0)
    assert remaining_ttl(swr_longer, T0) == 12.0
    assert remaining_ttl(EntryMeta(stored_at=T0, ttl=8.0), T0) == 8.0
    assert remaining_ttl(EntryMeta(stored_at=T0, ttl=0.0), T0) == MIN_REMAINING_TTL


def test_next_refresh_at() -> None:
    meta = EntryMeta(stored_at=T0, ttl=300.0)
    assert next_refresh_at(meta, refresh_ahead=0.0) == T0 + 300.0
    assert next_refresh_at(meta, refresh_ahead=60.0) == T0 + 240.0
    assert next_refresh_at(meta, refresh_ahead=timedelta(minutes=1)) == T0 + 240.0
    assert next_refresh_at(meta, refresh_ahead=300.0) == T0
    assert next_refresh_at(meta, refresh_ahead=1e9) == T0  # clamped to stored_at
    for bad in (-1.0, math.nan, math.inf, timedelta(seconds=-1)):
        with pytest.raises(ConfigurationError, match=r"refresh_ahead must be (>= 0|at most)"):
            next_refresh_at(meta, refresh_ahead=bad)


def test_refresh_ahead_job_keeps_a_precomputed_value_fresh() -> None:
    """A job recomputes a trending list every 5 minutes; readers never compute it.

    The value lives 6 minutes, the job takes 5 s (measured: ``delta``) and runs
    65 s before expiry, so it runs every 300 s and each new value is written 60 s
    before the previous one expires.
    """
    clock = FakeClock()
    compute = 5.0
    meta = EntryMeta.create(clock.now(), ttl=timedelta(minutes=6), delta=compute)
    runs: list[float] = []
    while clock.now() < 1_700_000_000.0 + 3600:
        run_at = next_refresh_at(meta, refresh_ahead=65.0)
        # readers every 250 ms until the job has written the new value
        while clock.now() < run_at + compute:
            assert classify(meta, clock.now()) is F.FRESH
            clock.advance(0.25)
        clock.set(run_at + compute)
        runs.append(run_at)
        meta = EntryMeta.create(
            clock.now(), ttl=meta.ttl, delta=compute, generation=meta.generation + 1
        )
    assert len(runs) == 12
    assert {b - a for a, b in itertools.pairwise(runs)} == {300.0}
    assert meta.generation == 12


# -- EntryMeta: construction and validation -----------------------------------


def test_entry_meta_is_frozen_slotted_keyword_only() -> None:
    meta = EntryMeta(stored_at=T0, ttl=1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cast(Any, meta).ttl = 2.0
    assert not hasattr(meta, "__dict__")
    with pytest.raises(TypeError):
        cast(Any, EntryMeta)(T0, 1.0)
    assert meta == EntryMeta(stored_at=T0, ttl=1.0)
    assert hash(meta) == hash(EntryMeta(stored_at=T0, ttl=1.0))
    assert (meta.stale_while_revalidate, meta.stale_if_error, meta.delta, meta.generation) == (
        0.0,
        0.0,
        0.0,
        0,
    )


def test_create_accepts_seconds_and_timedeltas() -> None:
    meta = EntryMeta.create(
        T0,
        ttl=timedelta(minutes=5),
        stale_while_revalidate=30,
        stale_if_error=timedelta(hours=1),
        delta=timedelta(milliseconds=250),
        generation=7,
    )
    assert meta == EntryMeta(
        stored_at=T0,
        ttl=300.0,
        stale_while_revalidate=30.0,
        stale_if_error=3600.0,
        delta=0.25,
        generation=7,
    )
    assert all(
        type(getattr(meta, f)) is float
        for f in ("stored_at", "ttl", "stale_while_revalidate", "stale_if_error", "delta")
    )
    ints = EntryMeta(stored_at=1, ttl=2)
    assert type(ints.stored_at) is float and type(ints.ttl) is float
    assert math.copysign(1.0, EntryMeta(stored_at=T0, ttl=-0.0).ttl) == 1.0


DURATION_FIELDS = ["ttl", "stale_while_revalidate", "stale_if_error", "delta"]
BAD_DURATIONS: list[Any] = [-1.0, -1e-9, -1, math.nan, math.inf, -math.inf]
BAD_TYPES: list[Any] = ["5", None, True, b"1", [1.0]]


@pytest.mark.parametrize("field", DURATION_FIELDS)
@pytest.mark.parametrize("value", [*BAD_DURATIONS, timedelta(seconds=-1)])
def test_bad_durations(field: str, value: Any) -> None:
    kwargs: dict[str, Any] = {"ttl": 1.0, field: value}
    with pytest.raises(ConfigurationError) as info:
        EntryMeta.create(T0, **kwargs)
    bound = r"must be (>= 0 seconds|at most \d+ seconds \(what every backend can store\)), got"
    assert re.search(rf"{field} {bound}", str(info.value)), info.value
    if not isinstance(value, timedelta):
        with pytest.raises(ConfigurationError) as info:
            EntryMeta(stored_at=T0, **kwargs)
        assert re.search(rf"EntryMeta\.{field} {bound}", str(info.value)), info.value
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("field", DURATION_FIELDS)
@pytest.mark.parametrize("value", BAD_TYPES)
def test_bad_duration_types(field: str, value: Any) -> None:
    kwargs: dict[str, Any] = {"ttl": 1.0, field: value}
    wrong = rf"{field} must be a number of seconds or a timedelta"
    with pytest.raises(ConfigurationError, match=wrong):
        EntryMeta(stored_at=T0, **kwargs)
    with pytest.raises(ConfigurationError, match=wrong):
        EntryMeta.create(T0, **kwargs)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "0", None, True])
def test_bad_stored_at(value: Any) -> None:
    with pytest.raises(
        ConfigurationError, match=r"EntryMeta\.stored_at must be a .*time in seconds"
    ):
        EntryMeta(stored_at=value, ttl=1.0)
    with pytest.raises(ConfigurationError, match=r"EntryMeta\.stored_at"):
        EntryMeta.create(value, ttl=1.0)


def test_negative_stored_at_is_fine() -> None:  # a monotonic clock may have any origin
    assert classify(EntryMeta(stored_at=-5.0, ttl=1.0), -4.5) is F.FRESH


@pytest.mark.parametrize("value", [-1, 1.0, True, "1", None])
def test_bad_generation(value: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"EntryMeta\.generation must be an int >= 0"):
        EntryMeta(stored_at=T0, ttl=1.0, generation=value)


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------


@FAST
@given(
    meta=grid_metas(),
    offsets=st.lists(st.integers(-(2**21), 2**22), min_size=1, max_size=20),
)
def test_matches_exact_reference_on_the_grid(meta: EntryMeta, offsets: list[int]) -> None:
    times = [meta.stored_at + k / GRID for k in offsets]
    times += [t for t in boundaries(meta) if Fraction(t) * GRID == int(Fraction(t) * GRID)]
    for now in times:
        expected = reference(meta, now)
        # deterministic: no early refresh without XFetch input
        assert classify(meta, now) is expected
        assert classify(meta, now, beta=0.0, rand=0.0) is expected
        # XFetch only ever turns FRESH into FRESH_EARLY_REFRESH
        got = classify(meta, now, rand=0.3)
        assert got is expected or (expected is F.FRESH and got is F.FRESH_EARLY_REFRESH)
        # the grid makes retain_until and remaining_ttl exact too
        retain = Fraction(meta.stored_at) + Fraction(meta.ttl)
        retain += max(Fraction(meta.stale_while_revalidate), Fraction(meta.stale_if_error))
        assert Fraction(meta.retain_until) == retain
        left = retain - Fraction(now)
        assert Fraction(remaining_ttl(meta, now)) == max(left, Fraction(MIN_REMAINING_TTL))


@FAST
@given(data=st.data(), meta=float_metas(), beta=betas, rand=rands)
def test_classification_is_monotone_in_time(
    data: st.DataObject, meta: EntryMeta, beta: float, rand: float
) -> None:
    times = sorted(data.draw(times_around(meta)))
    states = [classify(meta, t, beta=beta, rand=rand) for t in times]
    note(list(zip(times, states, strict=True)))
    ranks = [RANK[s] for s in states]
    assert ranks == sorted(ranks)


@FAST
@given(data=st.data(), meta=float_metas(), beta=betas, rand=rands)
def test_stale_states_only_when_configured(
    data: st.DataObject, meta: EntryMeta, beta: float, rand: float
) -> None:
    seen = {classify(meta, t, beta=beta, rand=rand) for t in data.draw(times_around(meta))}
    if meta.stale_while_revalidate == 0:
        assert F.STALE_REVALIDATE not in seen
    if meta.stale_if_error <= meta.stale_while_revalidate:
        assert F.STALE_IF_ERROR_ONLY not in seen
    if meta.delta == 0 or beta == 0 or rand == 1:
        assert F.FRESH_EARLY_REFRESH not in seen


@FAST
@given(data=st.data(), meta=float_metas(), rand=rands)
def test_no_early_refresh_without_beta_or_delta(
    data: st.DataObject, meta: EntryMeta, rand: float
) -> None:
    beta = data.draw(betas)
    no_delta = dataclasses.replace(meta, delta=0.0)
    for now in data.draw(times_around(meta)):
        plain = classify(meta, now)
        assert plain is not F.FRESH_EARLY_REFRESH
        assert classify(meta, now, beta=0.0, rand=rand) is plain
        assert classify(no_delta, now, beta=beta, rand=rand) is plain


@FAST
@given(data=st.data(), meta=float_metas(), beta=betas, rand=rands)
def test_load_failure_plan_and_retention_agree_with_classify(
    data: st.DataObject, meta: EntryMeta, beta: float, rand: float
) -> None:
    for now in data.draw(times_around(meta)):
        state = classify(meta, now, beta=beta, rand=rand)
        serve_stale = plan_after_load_failure(meta, now)
        assert serve_stale is (state is not F.EXPIRED)
        assert serve_stale is (now < meta.retain_until)
        left = remaining_ttl(meta, now)
        assert left >= MIN_REMAINING_TTL
        if serve_stale:
            # the stored entry lives as long as something is servable (exact on the
            # grid, see test_matches_exact_reference_on_the_grid; here up to rounding)
            slack = 4 * math.ulp(max(abs(now), abs(meta.retain_until)))
            assert now + left >= meta.retain_until - slack
    # retain_until is exactly the first EXPIRED instant
    assert classify(meta, meta.retain_until, beta=beta, rand=rand) is F.EXPIRED
    if meta.retain_until > meta.expires_at:
        last = classify(meta, before(meta.retain_until), beta=beta, rand=rand)
        assert last in (F.STALE_REVALIDATE, F.STALE_IF_ERROR_ONLY)


@FAST
@given(
    meta=float_metas(),
    beta=st.floats(min_value=1e-3, max_value=10.0),
    rand=st.floats(min_value=1e-300, max_value=1.0, exclude_max=True),
    where=st.one_of(
        st.floats(min_value=-1e9, max_value=2e9),  # an absolute time
        st.floats(min_value=0.0, max_value=3.0).map(lambda f: -f),  # -(fraction of window)
    ),
)
@example(meta=EntryMeta(stored_at=T0, ttl=60.0, delta=1e-3), beta=1.0, rand=0.5, where=-1.0)
def test_xfetch_early_window_is_exactly_delta_beta_ln_rand(
    meta: EntryMeta, beta: float, rand: float, where: float
) -> None:
    """Early refresh iff ``now - delta*beta*ln(rand) >= expiry`` (while fresh).

    Checked in exact arithmetic against the window length ``w = -delta*beta*ln(rand)``
    widened/narrowed by 1e-12 relative (the float rounding of ``w``): at least
    ``w`` before expiry it triggers, more than ``w`` before the float below expiry
    it does not. In particular it triggers at the last float before expiry as soon
    as ``w`` covers that gap: the early window only ever grows as ``now -> expiry``.
    """
    assume(meta.delta > 0)
    e = meta.expires_at
    w = Fraction(-(meta.delta * beta * math.log(rand)))
    assume(w > 0)
    # where <= 0 (and > -3): that many window lengths before expiry
    now = where if where > 0 or where < -3 else e + where * float(w)
    note(f"expiry={e!r} now={now!r} window={float(w)!r}")
    if not now < e:
        assert classify(meta, now, beta=beta, rand=rand) is not F.FRESH_EARLY_REFRESH
        return
    state = classify(meta, now, beta=beta, rand=rand)
    if Fraction(now) + w * Fraction(1 - 1e-12) >= Fraction(e):
        assert state is F.FRESH_EARLY_REFRESH
    elif Fraction(now) + w * Fraction(1 + 1e-12) <= Fraction(before(e)):
        assert state is F.FRESH
    if w * Fraction(1 - 1e-12) >= Fraction(e) - Fraction(before(e)):
        assert classify(meta, before(e), beta=beta, rand=rand) is F.FRESH_EARLY_REFRESH


def _early_count(meta: EntryMeta, now: float, beta: float, n: int, seed: int) -> int:
    rng = random.Random(seed)
    early = 0
    for _ in range(n):
        state = classify(meta, now, beta=beta, rand=1.0 - rng.random())
        early += state is F.FRESH_EARLY_REFRESH
    return early


def _assert_binomial(count: int, n: int, p: float, sigmas: float = 5.0) -> None:
    sd = math.sqrt(n * p * (1.0 - p))
    # +1: a count is an integer, and sd -> 0 as p -> 0 or 1
    assert abs(count - n * p) <= sigmas * sd + 1, (count, n * p, sd)


N_SAMPLES = 20_000


@pytest.mark.parametrize("p", [0.0001, 0.01, 0.1, 0.5, 0.9, 0.99, 0.9999])
@pytest.mark.parametrize(("delta", "beta"), [(0.5, 1.0), (2.0, 1.0), (0.05, 4.0), (3.0, 0.25)])
def test_xfetch_probability_matches_analytic(p: float, delta: float, beta: float) -> None:
    meta = EntryMeta(stored_at=T0, ttl=600.0, delta=delta)
    e = meta.expires_at
    now = e + delta * beta * math.log(p)  # exp(-(e - now) / (delta * beta)) ~ p
    analytic = math.exp(-(e - now) / (delta * beta))  # now is rounded: use its own p
    assert analytic == pytest.approx(p, rel=1e-4)
    count = _early_count(meta, now, beta, N_SAMPLES, seed=hash((p, delta, beta)) & 0xFFFF)
    _assert_binomial(count, N_SAMPLES, analytic)


@SLOW
@given(
    delta=st.floats(min_value=1e-3, max_value=30.0),
    beta=st.floats(min_value=0.05, max_value=5.0),
    p=st.floats(min_value=0.001, max_value=0.999),
    stored_at=st.sampled_from([0.0, 1e6, T0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_xfetch_probability_matches_analytic_everywhere(
    delta: float, beta: float, p: float, stored_at: float, seed: int
) -> None:
    meta = EntryMeta(stored_at=stored_at, ttl=3600.0, delta=delta)
    e = meta.expires_at
    now = e + delta * beta * math.log(p)
    assume(now < e)
    analytic = math.exp(-(e - now) / (delta * beta))
    _assert_binomial(_early_count(meta, now, beta, N_SAMPLES, seed), N_SAMPLES, analytic)


def test_xfetch_probability_tends_to_one_at_expiry_and_zero_long_before() -> None:
    meta = EntryMeta(stored_at=T0, ttl=600.0, delta=1.0)
    e = meta.expires_at
    assert _early_count(meta, before(e), 1.0, N_SAMPLES, seed=1) == N_SAMPLES
    # 60 delta before expiry: p = exp(-60) ~ 1e-26
    assert _early_count(meta, e - 60.0, 1.0, N_SAMPLES, seed=2) == 0
    # and more likely the closer to expiry (same random numbers, by monotonicity)
    counts = [_early_count(meta, e - gap, 1.0, 5_000, seed=3) for gap in (4.0, 2.0, 1.0, 0.5)]
    assert counts == sorted(counts) and counts[0] < counts[-1]

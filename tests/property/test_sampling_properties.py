"""Property tests (hypothesis) for the sampling invariants."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from scalekit.sampling import Keyed, Reservoir, Weighted, budget_probability, ramp
from scalekit.sampling._reservoir import _OneDrawPerItem

ids = st.one_of(st.text(max_size=40), st.binary(max_size=40), st.integers(min_value=0))
rates = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
hashes = st.sampled_from(["crc32", "blake2b"])


@given(key=ids, r1=rates, r2=rates, salt=st.text(max_size=10), hash_name=hashes)
def test_keyed_is_monotone_in_its_rate(
    key: str | bytes | int, r1: float, r2: float, salt: str, hash_name: str
) -> None:
    lo, hi = sorted((r1, r2))
    a = Keyed(lo, key=lambda m: m, salt=salt, hash=hash_name)  # type: ignore[arg-type]
    b = Keyed(hi, key=lambda m: m, salt=salt, hash=hash_name)  # type: ignore[arg-type]
    if a.draw(key, lo):
        assert b.draw(key, hi)
    # and the decision is the threshold test on a number in [0, 1)
    u = a.unit(key)
    assert 0.0 <= u < 1.0
    assert a.draw(key, lo) == (u < lo) or abs(u - lo) < 1e-9


@given(key=ids, rate=rates)
def test_keyed_decision_is_a_pure_function_of_the_id(key: str | bytes | int, rate: float) -> None:
    a = Keyed(rate, key=lambda m: m, name="x")
    b = Keyed(rate, key=lambda m: m, name="x")
    assert a.draw(key, rate) == b.draw(key, rate) == a.draw(key, rate)


@given(key=ids, p1=rates, p2=rates)
def test_keyed_weighted_is_monotone_in_its_probability(
    key: str | bytes | int, p1: float, p2: float
) -> None:
    lo, hi = sorted((p1, p2))
    w = Weighted(lambda m: 0.0, key=lambda m: m)
    if w.draw(key, lo):
        assert w.draw(key, hi)
    assert not w.draw(key, 0.0) and w.draw(key, 1.0)


counts = st.integers(min_value=0, max_value=10**6)


@given(
    target=st.integers(min_value=1, max_value=10**5),
    sampled=counts,
    considered=st.integers(min_value=1, max_value=10**6),
    previous=st.one_of(st.none(), st.integers(min_value=-1, max_value=10**6)),
    frac=st.floats(min_value=0.0, max_value=0.999999),
    period=st.floats(min_value=1.0, max_value=1e7),
    expected=st.one_of(st.none(), st.floats(min_value=0.0, max_value=1e7)),
)
@settings(max_examples=300)
def test_budget_probability_is_a_probability_and_stops_at_the_target(
    target: int,
    sampled: int,
    considered: int,
    previous: int | None,
    frac: float,
    period: float,
    expected: float | None,
) -> None:
    kw = {
        "considered": considered,
        "previous": previous,
        "elapsed": frac * period,
        "period": period,
        "expected": expected,
    }
    p = budget_probability(target=target, sampled=sampled, **kw)  # type: ignore[arg-type]
    assert 0.0 <= p <= 1.0
    assert (p == 0.0) == (sampled >= target)
    # more already sampled never raises the probability; a bigger target never lowers it
    assert budget_probability(target=target, sampled=sampled + 1, **kw) <= p  # type: ignore[arg-type]
    assert budget_probability(target=target + 1, sampled=sampled, **kw) >= p  # type: ignore[arg-type]
    # more arrivals seen never raises it either
    more = dict(kw, considered=considered + 100)
    assert budget_probability(target=target, sampled=sampled, **more) <= p  # type: ignore[arg-type]


@given(
    x=st.floats(min_value=-1e6, max_value=1e6),
    y=st.floats(min_value=-1e6, max_value=1e6),
    p0=rates,
    p1=rates,
)
def test_ramp_stays_between_its_ends_and_is_monotone(
    x: float, y: float, p0: float, p1: float
) -> None:
    f = ramp(lambda v: v, (0.0, p0), (10.0, p1))
    lo, hi = min(p0, p1), max(p0, p1)
    assert lo - 1e-12 <= f(x) <= hi + 1e-12
    a, b = sorted((x, y))
    if p1 >= p0:
        assert f(a) <= f(b) + 1e-12
    else:
        assert f(a) >= f(b) - 1e-12


@given(
    k=st.integers(min_value=1, max_value=8),
    weights=st.lists(st.floats(min_value=1e-6, max_value=1e6), max_size=60),
    seed=st.integers(min_value=0, max_value=2**32),
    algorithm=st.sampled_from([_OneDrawPerItem, Reservoir]),
)
def test_reservoir_keeps_min_k_n_distinct_items_of_the_stream(
    k: int,
    weights: list[float],
    seed: int,
    algorithm: type[Reservoir[int]] | type[_OneDrawPerItem[int]],
) -> None:
    r = algorithm(k, rng=random.Random(seed))
    r.extend(enumerate(weights))
    got = r.sample()
    assert len(got) == min(k, len(weights)) == len(set(got))
    assert set(got) <= set(range(len(weights)))
    assert r.seen == len(weights)

"""Statistical tests of the samplers and reservoirs, with fixed seeds.

Every check is a hypothesis test at a small significance level, run on fixed
seeds, so the outcome is deterministic: a failure means the distribution is off,
not bad luck on this run (a change of seed could, rarely, need a look).

- Rates: the observed count must lie within Z = 4 standard deviations of the
  binomial mean, n*p +/- 4*sqrt(n*p*(1-p)) (two-sided level ~6e-5).
- Distributions: Pearson's chi-square against the exact probabilities, compared
  with the 0.999 quantile of the chi-square distribution for the test's degrees
  of freedom. scipy is not a dependency, so the quantiles are hardcoded from the
  standard tables (e.g. NIST/SEMATECH e-Handbook, table 1.3.6.7.4, "upper critical
  values of the chi-square distribution", column 0.999); a test checks them
  against the Wilson-Hilferty approximation as a guard against typos.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter

import pytest

from scalekit.sampling import Fixed, Keyed, Pipeline, Reservoir, Weighted
from scalekit.sampling._reservoir import _OneDrawPerItem

Z = 4.0

# upper 0.001 critical values of chi-square, by degrees of freedom (tables)
CHI2_999 = {9: 27.877, 15: 37.697, 19: 43.820, 34: 65.247}


def chi2_critical(df: int) -> float:
    return CHI2_999[df]


def test_chi2_table_agrees_with_wilson_hilferty() -> None:
    """Wilson-Hilferty: df * (1 - 2/(9 df) + z sqrt(2/(9 df)))**3, z = the normal
    0.999 quantile; within 1 % of the tables for df >= 9."""
    z = 3.0902
    for df, table in CHI2_999.items():
        a = 2 / (9 * df)
        assert df * (1 - a + z * math.sqrt(a)) ** 3 == pytest.approx(table, rel=0.01)


def chi2(observed: list[int], expected: list[float]) -> float:
    return sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))


def within_binomial(k: int, n: int, p: float) -> bool:
    return abs(k - n * p) <= Z * math.sqrt(n * p * (1 - p))


IDS = {
    "sequential": [f"msg:{i}" for i in range(40_000)],
    "uuid-like": [f"{random.Random(i).getrandbits(128):032x}" for i in range(40_000)],
    "integers": list(range(10**9, 10**9 + 40_000)),
}


@pytest.mark.parametrize("rate", [0.01, 0.2, 0.25, 0.5, 0.9])
def test_fixed_rate_is_binomial(rate: float) -> None:
    p = Pipeline(Fixed(rate, rng=random.Random(42)))
    n = 40_000
    k = sum(p.decide(i).sampled for i in range(n))
    assert within_binomial(k, n, rate), (k, n * rate)


@pytest.mark.parametrize("hash_name", ["crc32", "blake2b"])
@pytest.mark.parametrize("ids", list(IDS))
@pytest.mark.parametrize("rate", [0.01, 0.25, 0.7])
def test_keyed_rate_is_binomial(rate: float, ids: str, hash_name: str) -> None:
    p = Pipeline(Keyed(rate, key=lambda m: m, hash=hash_name))  # type: ignore[arg-type]
    k = sum(p.decide(i).sampled for i in IDS[ids])
    assert within_binomial(k, len(IDS[ids]), rate), (k, len(IDS[ids]) * rate)


@pytest.mark.parametrize("hash_name", ["crc32", "blake2b"])
@pytest.mark.parametrize("ids", list(IDS))
def test_keyed_hash_is_uniform(ids: str, hash_name: str) -> None:
    s = Keyed(0.5, key=lambda m: m, hash=hash_name)  # type: ignore[arg-type]
    bins = 20
    counts = Counter(min(bins - 1, int(s.unit(i) * bins)) for i in IDS[ids])
    n = len(IDS[ids])
    stat = chi2([counts[b] for b in range(bins)], [n / bins] * bins)
    assert stat < chi2_critical(bins - 1), stat


@pytest.mark.parametrize("hash_name", ["crc32", "blake2b"])
def test_two_salts_draw_independently(hash_name: str) -> None:
    """A 4 x 4 contingency table of two samplers' draws: independent => uniform."""
    a = Keyed(0.5, key=lambda m: m, salt="a", hash=hash_name)  # type: ignore[arg-type]
    b = Keyed(0.5, key=lambda m: m, salt="b", hash=hash_name)  # type: ignore[arg-type]
    ids = IDS["sequential"]
    counts = Counter((int(a.unit(i) * 4), int(b.unit(i) * 4)) for i in ids)
    cells = list(itertools.product(range(4), range(4)))
    stat = chi2([counts[c] for c in cells], [len(ids) / 16] * 16)
    assert stat < chi2_critical(15), stat


@pytest.mark.parametrize("keyed", [False, True])
def test_weighted_rates_are_binomial_per_weight(keyed: bool) -> None:
    weights = {"new": 0.2, "mid": 0.25, "old": 0.3}
    if keyed:
        s = Weighted(lambda m: weights[m[0]], key=lambda m: m[1])
    else:
        s = Weighted(lambda m: weights[m[0]], rng=random.Random(9))
    p = Pipeline(s)
    n = 20_000
    for kind, rate in weights.items():
        k = sum(p.decide((kind, f"id{i}")).sampled for i in range(n))
        assert within_binomial(k, n, rate), (kind, k, n * rate)


# -- reservoirs --------------------------------------------------------------------------------


def ordered_sample_probability(order: tuple[int, ...], weights: list[float]) -> float:
    """P(successive weighted draws without replacement give ``order``)."""
    left = sum(weights)
    prob = 1.0
    for i in order:
        prob *= weights[i] / left
        left -= weights[i]
    return prob


@pytest.mark.parametrize("algorithm", [_OneDrawPerItem, Reservoir])
def test_reservoir_sets_match_weighted_sampling_without_replacement(
    algorithm: type[Reservoir[int]] | type[_OneDrawPerItem[int]],
) -> None:
    """n=7 items, k=3: the 35 possible sets against their exact probabilities."""
    weights = [1.0, 2.0, 3.0, 0.5, 4.0, 1.5, 2.5]
    k = 3
    exact: dict[frozenset[int], float] = {}
    for order in itertools.permutations(range(len(weights)), k):
        key = frozenset(order)
        exact[key] = exact.get(key, 0.0) + ordered_sample_probability(order, weights)
    assert sum(exact.values()) == pytest.approx(1.0)
    rng = random.Random(2024)
    trials = 30_000
    counts: Counter[frozenset[int]] = Counter()
    for _ in range(trials):
        r = algorithm(k, rng=rng)
        for i, w in enumerate(weights):
            r.add(i, w)
        counts[frozenset(r.sample())] += 1
    sets = list(exact)
    stat = chi2([counts[s] for s in sets], [exact[s] * trials for s in sets])
    assert stat < chi2_critical(len(sets) - 1), stat
    inclusion = [sum(c for s, c in counts.items() if i in s) / trials for i in range(7)]
    theory = [sum(p for s, p in exact.items() if i in s) for i in range(7)]
    for got, want in zip(inclusion, theory, strict=True):
        assert within_binomial(round(got * trials), trials, want)


@pytest.mark.parametrize("algorithm", [_OneDrawPerItem, Reservoir])
def test_reservoir_first_item_is_proportional_to_weight_on_a_long_stream(
    algorithm: type[Reservoir[int]] | type[_OneDrawPerItem[int]],
) -> None:
    """The highest key of weighted sampling without replacement is item i with
    probability w_i / sum(w), however long the stream (A-ExpJ jumps over most of it)."""
    rng = random.Random(77)
    weights = [1.0 + (i % 10) for i in range(200)]
    total = sum(weights)
    trials = 8_000
    first: Counter[int] = Counter()
    for _ in range(trials):
        r = algorithm(5, rng=rng)
        r.extend(zip(range(200), weights, strict=True))
        top = r.sample()
        assert len(top) == 5 and len(set(top)) == 5
        first[top[0] // 20] += 1  # 10 groups of 20 items, same total weight per group
    group = [sum(weights[g * 20 : (g + 1) * 20]) / total for g in range(10)]
    stat = chi2([first[g] for g in range(10)], [p * trials for p in group])
    assert stat < chi2_critical(9), stat


def test_reservoir_draws_far_fewer_random_numbers_than_one_per_item() -> None:
    draws = 0
    base = random.Random(1)

    def counting() -> float:
        nonlocal draws
        draws += 1
        return base.random()

    r = Reservoir(10, rng=counting)
    r.extend((i, 1.0) for i in range(100_000))
    assert r.seen == 100_000 and len(r) == 10
    assert draws < 2_000, draws  # O(k log(n/k)) insertions, 2 draws each

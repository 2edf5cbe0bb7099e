"""The sampling pipeline's compiled paths (gates then one ``Fixed`` or ``Keyed``
sampler, the ``crc32`` hash inlined) decide as the stages themselves do.

The reference walks the stages with their own ``probability`` and ``draw`` (the
pure definitions); the compiled pipeline must give the same decision, field by
field, and count the same skips.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalekit.sampling import Fixed, Gate, Keyed, Pipeline, SampleDecision

_items = st.lists(
    # text with lone surrogates too: the inlined hash encodes with "surrogatepass"
    st.text(max_size=12)
    | st.text(st.characters(categories=["Cs", "Ll", "Lo", "Nd"]), max_size=12)
    | st.binary(max_size=12)
    | st.integers(-(2**70), 2**70),
    min_size=1,
    max_size=60,
)
_rates = st.sampled_from([0.0, 1.0, 0.1, 0.5, 0.5, 0.9]) | st.floats(0.01, 0.99)


def _gates(moduli: list[int]) -> list[Gate[Any]]:
    # an item passes gate i unless its length (or value) is a multiple of moduli[i]
    def passes(m: int) -> Any:
        return lambda item: (len(item) if not isinstance(item, int) else item) % m != 0

    return [Gate(f"gate{i}", passes(m)) for i, m in enumerate(moduli)]


def _reference(
    gates: list[Gate[Any]], sampler: Any, items: list[Any]
) -> tuple[list[SampleDecision], dict[str, int], int]:
    decisions = []
    skipped = {g.name: 0 for g in gates} | {sampler.name: 0}
    sampled = 0
    for item in items:
        for g in gates:
            if not g.predicate(item):
                skipped[g.name] += 1
                decisions.append(SampleDecision(False, g.name, "gate", 0.0))
                break
        else:
            p = sampler.probability(item)
            if sampler.draw(item, p):
                sampled += 1
                decisions.append(SampleDecision(True, sampler.name, "sampler", p))
            else:
                skipped[sampler.name] += 1
                decisions.append(SampleDecision(False, sampler.name, "sampler", p))
    return decisions, skipped, sampled


def _check(pipeline: Pipeline[Any], gates: list[Gate[Any]], ref_sampler: Any, items: Any) -> None:
    want, skipped, sampled = _reference(gates, ref_sampler, items)
    got = [pipeline.decide(item) for item in items]
    assert [tuple(d) for d in got] == [tuple(d) for d in want]
    stats = pipeline.stats()
    assert (stats.skipped, stats.sampled) == (skipped, sampled)


@pytest.mark.parametrize("hash_name", ["crc32", "blake2b"])
@settings(max_examples=150, deadline=None)
@given(
    rate=_rates,
    salt=st.text(max_size=8),
    moduli=st.lists(st.integers(2, 5), max_size=3),
    items=_items,
)
def test_gates_then_keyed_decide_as_the_stages(
    hash_name: str, rate: float, salt: str, moduli: list[int], items: list[Any]
) -> None:
    gates = _gates(moduli)
    keyed: Keyed[Any] = Keyed(rate, key=lambda m: m, salt=salt, hash=hash_name)  # type: ignore[arg-type]
    _check(Pipeline(*gates, keyed), gates, keyed, items)


@settings(max_examples=150, deadline=None)
@given(
    rate=_rates,
    seed=st.integers(0, 2**32),
    moduli=st.lists(st.integers(2, 5), max_size=3),
    items=_items,
)
def test_gates_then_fixed_decide_as_the_stages(
    rate: float, seed: int, moduli: list[int], items: list[Any]
) -> None:
    gates = _gates(moduli)
    fixed = Fixed(rate, rng=random.Random(seed))
    reference = Fixed(rate, rng=random.Random(seed))  # the same draws
    _check(Pipeline(*gates, fixed), gates, reference, items)

"""The estimator against a simulation of the same traffic profile (within 5 %)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import pytest

from scalekit import ConfigurationError
from scalekit.sampling import (
    Budget,
    Cap,
    Gate,
    Histogram,
    Pipeline,
    TrafficProfile,
    Weighted,
    estimate,
    ramp,
)
from scalekit.testing import FakeClock

DAY = 86400.0


@dataclass(frozen=True)
class Message:
    id: str
    user: str
    length: int
    turns: int


LENGTHS = Histogram({20: 35, 80: 40, 300: 25})  # characters; 35 % under 50
TURNS = Histogram({1: 15, 2: 15, 5: 30, 15: 25, 40: 15})  # messages in the conversation


def profile(volume: int, keys: int | None) -> TrafficProfile[Message]:
    return TrafficProfile(
        volume=volume,
        dimensions={"length": LENGTHS, "turns": TURNS},
        make=lambda length, turns: Message("", "", length, turns),
        keys=keys,
    )


def pipeline(clock: FakeClock, *extra: Any) -> Pipeline[Message]:
    return Pipeline(
        Gate("long_enough", lambda m: m.length >= 50),
        Gate("mature", lambda m: m.turns >= 3),
        Weighted(ramp(lambda m: m.turns, (3, 0.20), (30, 0.30)), key=lambda m: m.id),
        *extra,
    )


def simulate(pipe: Pipeline[Message], prof: TrafficProfile[Message], clock: FakeClock) -> int:
    """Draw the profile's messages at uniform times over its period and users."""
    rng = random.Random(11)
    start = math.ceil(clock.now() / DAY) * DAY + DAY
    n = int(prof.volume)
    period = float(prof.period)  # type: ignore[arg-type]
    times = sorted(rng.uniform(0, period) for _ in range(n))
    keys = prof.keys or 1
    sampled = 0
    for i, t in enumerate(times):
        clock.set(start + t)
        m = prof.draw(rng)
        m = Message(f"m{i}", f"u{rng.randrange(keys)}", m.length, m.turns)
        sampled += pipe.decide(m).sampled
    return sampled


def test_the_plan_in_the_issue() -> None:
    """300K messages a month through the gates, the 20-30 % ramp and the cap.

    The plan's 60-90K applied 20-30 % to all 300K; with this profile's shares of
    short messages (35 %) and young conversations (30 %) the gates leave 136.5K
    and the ramp ~33K."""
    clock = FakeClock()
    pipe = pipeline(clock, Cap("100/day", key=lambda m: m.user, clock=clock))
    est = estimate(pipe, profile(300_000, keys=2000))
    stages = {s.name: s for s in est.stages}
    assert stages["long_enough"].leaving == pytest.approx(300_000 * 0.65)
    assert stages["mature"].leaving == pytest.approx(300_000 * 0.65 * 0.70)
    # ramp: 5 -> 0.2074, 15 -> 0.2444, 40 -> 0.30, weighted by 30:25:15 of 70
    mean_p = (30 * (0.2 + 0.1 * 2 / 27) + 25 * (0.2 + 0.1 * 12 / 27) + 15 * 0.3) / 70
    assert stages["weighted"].leaving == pytest.approx(300_000 * 0.65 * 0.70 * mean_p)
    assert stages["cap"].leaving == pytest.approx(stages["cap"].entering, rel=1e-6)
    assert 30_000 < est.sampled < 35_000  # this profile: ~33K, under the plan's 60-90K
    assert "| long_enough | gate | 300,000 | 195,000 | 65.0% |" in est.table()
    simulated = simulate(pipe, profile(300_000, keys=2000), clock)
    assert simulated == pytest.approx(est.sampled, rel=0.05)


def test_a_binding_per_user_cap() -> None:
    """20 heavy users (500 messages a day each): the 50/day cap binds for many."""
    clock = FakeClock()
    pipe = pipeline(clock, Cap("50/day", key=lambda m: m.user, clock=clock))
    prof = profile(300_000, keys=20)
    est = estimate(pipe, prof)
    stages = {s.name: s for s in est.stages}
    assert stages["cap"].leaving < 0.95 * stages["cap"].entering
    simulated = simulate(pipe, prof, clock)
    assert simulated == pytest.approx(est.sampled, rel=0.05)


def test_a_binding_global_budget() -> None:
    clock = FakeClock()
    pipe = pipeline(clock, Budget("400/day", clock=clock, rng=random.Random(3)))
    prof = profile(150_000, keys=None)
    est = estimate(pipe, prof)
    assert est.sampled == pytest.approx(400 * 30)  # the flow, ~16.4K, is above it
    simulated = simulate(pipe, prof, clock)
    assert simulated == pytest.approx(est.sampled, rel=0.05)


def test_histogram_and_profile_validation() -> None:
    h = Histogram({1: 1, 3: 3})
    assert h.probabilities == {1: 0.25, 3: 0.75} and h.mean() == 2.5
    for bad in ({}, {1: -1}, {1: 0}, {1: float("inf")}):
        with pytest.raises(ConfigurationError):
            Histogram(bad)
    with pytest.raises(ConfigurationError, match="volume"):
        TrafficProfile(volume=-1, dimensions={"x": h}, make=lambda x: x)
    with pytest.raises(ConfigurationError, match="keys"):
        TrafficProfile(volume=1, dimensions={"x": h}, make=lambda x: x, keys=0)
    with pytest.raises(ConfigurationError, match="Histogram"):
        TrafficProfile(volume=1, dimensions={"x": {1: 1}}, make=lambda x: x)  # type: ignore[dict-item]

"""Predict what a pipeline lets through, from a traffic profile: the arithmetic of
"300K messages a month, 40 % are too short, ... -> 60-90K extractions", done for you.

A :class:`TrafficProfile` gives the volume per period and independent discrete
distributions (:class:`Histogram`) of the item's attributes, plus a function that
builds an item from one value of each. :func:`estimate` walks every combination of
values with its probability through the pipeline's gates and local samplers
(exactly: the expected value, no sampling), then applies the budgets and caps to
the surviving flow, assuming arrivals spread evenly over time and, for per-key
budgets and caps, over ``profile.keys`` keys (Poisson counts per key and window).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, TypeVar

from scalekit import _validate as check
from scalekit.errors import ConfigurationError
from scalekit.ratelimit._policy import Rate
from scalekit.sampling._budget import Budget, Cap
from scalekit.sampling._pipeline import Pipeline
from scalekit.sampling._stages import Gate

__all__ = ["Estimate", "Histogram", "StageEstimate", "TrafficProfile", "estimate"]

T = TypeVar("T")

MONTH = 30 * 86400.0


class Histogram:
    """A discrete distribution: ``Histogram({20: 0.3, 80: 0.5, 400: 0.2})``.

    Keys are the values, weights need not sum to 1 (they are normalised). Use one
    representative value per bucket (e.g. the bucket's middle).
    """

    __slots__ = ("_cum", "_values", "probabilities")

    def __init__(self, weights: Mapping[Any, float]) -> None:
        if not isinstance(weights, Mapping) or not weights:
            raise ConfigurationError(
                f"a Histogram needs a non-empty mapping value -> weight, got {weights!r}"
            )
        for v, w in weights.items():
            check.number(w, f"the Histogram weight of {v!r}", minimum=0)
        total = float(sum(weights.values()))
        if total <= 0:
            raise ConfigurationError("a Histogram needs at least one positive weight")
        self.probabilities: dict[Any, float] = {v: w / total for v, w in weights.items() if w}
        self._values = list(self.probabilities)
        self._cum = list(itertools.accumulate(self.probabilities.values()))

    def sample(self, rng: random.Random) -> Any:
        """One value drawn from the distribution."""
        return rng.choices(self._values, cum_weights=self._cum)[0]

    def mean(self) -> float:
        return float(sum(v * p for v, p in self.probabilities.items()))

    def __repr__(self) -> str:
        return f"Histogram({self.probabilities!r})"


@dataclass(frozen=True, slots=True, kw_only=True)
class TrafficProfile(Generic[T]):
    """``volume`` items per ``period`` (default 30 days), attributes drawn
    independently from ``dimensions``, and ``make(**values)`` building an item.

    ``keys``: how many keys (users) the volume spreads over evenly, for budgets
    with ``per=`` and caps; ``None`` treats every budget and cap as global.
    """

    volume: float
    dimensions: Mapping[str, Histogram]
    make: Callable[..., T]
    period: float | timedelta = MONTH
    keys: int | None = None

    def __post_init__(self) -> None:
        check.number(self.volume, "volume", minimum=0)
        object.__setattr__(self, "period", check.duration(self.period, "a profile's period"))
        if not all(isinstance(h, Histogram) for h in self.dimensions.values()):
            raise ConfigurationError("every dimension of a TrafficProfile must be a Histogram")
        if not callable(self.make):
            raise ConfigurationError(
                f"make must build an item from the dimensions, got {self.make!r}"
            )
        if self.keys is not None:
            check.count(self.keys, "keys (or None)")

    def combinations(self) -> list[tuple[T, float]]:
        """Every item the profile can produce, with its probability."""
        names = list(self.dimensions)
        grids = [list(self.dimensions[n].probabilities.items()) for n in names]
        out: list[tuple[T, float]] = []
        for combo in itertools.product(*grids):
            prob = math.prod(p for _, p in combo)
            out.append((self.make(**{n: v for n, (v, _) in zip(names, combo, strict=True)}), prob))
        return out

    def draw(self, rng: random.Random) -> T:
        """One random item (for simulations)."""
        return self.make(**{n: h.sample(rng) for n, h in self.dimensions.items()})


@dataclass(frozen=True, slots=True)
class StageEstimate:
    """Expected items per profile period entering and leaving one stage."""

    name: str
    kind: str
    entering: float
    leaving: float

    @property
    def skipped(self) -> float:
        return self.entering - self.leaving


@dataclass(frozen=True, slots=True)
class Estimate:
    """:func:`estimate`'s answer, per profile period."""

    considered: float
    sampled: float
    stages: tuple[StageEstimate, ...]
    period: float

    @property
    def rate(self) -> float:
        """The overall fraction sampled."""
        return self.sampled / self.considered if self.considered else 0.0

    def table(self) -> str:
        """A markdown table of the flow through the stages."""
        lines = [
            "| stage | kind | entering | leaving | kept |",
            "|---|---|--:|--:|--:|",
        ]
        for s in self.stages:
            kept = s.leaving / s.entering if s.entering else 0.0
            lines.append(
                f"| {s.name} | {s.kind} | {s.entering:,.0f} | {s.leaving:,.0f} | {kept:.1%} |"
            )
        lines.append(
            f"| **total** | | {self.considered:,.0f} | {self.sampled:,.0f} | {self.rate:.1%} |"
        )
        return "\n".join(lines)


def _poisson_min(lam: float, cap: int) -> float:
    """E[min(N, cap)] for N ~ Poisson(lam): cap - sum_{j<cap} (cap - j) P(N = j)."""
    if lam <= 0:
        return 0.0
    if lam > cap + 12 * math.sqrt(lam) + 50:  # the cap binds almost surely
        return float(cap)
    total = 0.0
    log_p = -lam  # log P(N = 0)
    for j in range(cap):
        total += (cap - j) * math.exp(log_p)
        log_p += math.log(lam) - math.log(j + 1)
    return cap - total


def _limit_rates(cap: Cap[Any]) -> tuple[Rate, ...]:
    lim = cap.limiter
    if lim.policy is None:
        raise ConfigurationError(
            f"estimate() cannot model the tiered cap {cap.name!r}: give it a single policy"
        )
    return lim.policy.rates


def _capped(flow: float, rate: Rate, period: float, keys: int | None) -> float:
    """Expected items per profile period passing a limit of ``rate`` per scope."""
    windows = period / rate.period
    scopes = keys or 1
    lam = flow / windows / scopes  # expected arrivals per scope and window
    if keys is None:
        return min(flow, rate.limit * windows)
    return _poisson_min(lam, rate.limit) * scopes * windows


def estimate(pipeline: Pipeline[T], profile: TrafficProfile[T]) -> Estimate:
    """Expected items per ``profile.period`` entering and leaving every stage."""
    if not isinstance(pipeline, Pipeline):
        raise ConfigurationError(f"estimate() needs a Pipeline, got {pipeline!r}")
    combos = profile.combinations()
    volume = float(profile.volume)
    period = float(profile.period)  # type: ignore[arg-type]
    flows = [(item, volume * p) for item, p in combos]
    stages: list[StageEstimate] = []
    for st in pipeline._local:
        entering = sum(f for _, f in flows)
        if isinstance(st, Gate):
            flows = [(item, f if st.predicate(item) else 0.0) for item, f in flows]
        else:
            flows = [(item, f * st.probability(item)) for item, f in flows]
        stages.append(StageEstimate(st.name, st.kind, entering, sum(f for _, f in flows)))
    flow = sum(f for _, f in flows)
    for rst in pipeline._remote:
        entering = flow
        if isinstance(rst, Budget):
            keys = profile.keys if rst.per is not None else None
            flow = _capped(flow, rst.rate, period, keys)
        else:
            for rate in _limit_rates(rst):
                flow = min(flow, _capped(flow, rate, period, profile.keys))
        stages.append(StageEstimate(rst.name, rst.kind, entering, flow))
    return Estimate(volume, flow, tuple(stages), period)

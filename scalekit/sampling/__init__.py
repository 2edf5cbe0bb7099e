"""Sampling for expensive background work: gates, samplers, budgets, reservoirs.

>>> from scalekit.sampling import Gate, Keyed, Pipeline
>>> pipeline = Pipeline(
...     Gate("long_enough", lambda text: len(text) >= 50),
...     Keyed(0.25, key=lambda text: text),
... )
>>> pipeline.decide("too short").explain()
"skipped by gate 'long_enough' (p=0)"
"""

from scalekit._deprecated import moved_name
from scalekit.sampling import _hash, _reservoir
from scalekit.sampling._budget import Budget, BudgetFailurePolicy, Cap, budget_probability
from scalekit.sampling._decision import SampleDecision
from scalekit.sampling._decorator import BackgroundTasks, SampledDecorator, TaskStats, sampled
from scalekit.sampling._estimate import Estimate, Histogram, StageEstimate, TrafficProfile, estimate
from scalekit.sampling._hash import HashName
from scalekit.sampling._pipeline import Pipeline, SamplingStats, Stage
from scalekit.sampling._reservoir import Reservoir
from scalekit.sampling._stages import Fixed, Gate, Keyed, Rng, Weighted, ramp

__all__ = [
    "BackgroundTasks",
    "TaskStats",
    "Budget",
    "BudgetFailurePolicy",
    "Cap",
    "Estimate",
    "Fixed",
    "Gate",
    "HashName",
    "Histogram",
    "Keyed",
    "Pipeline",
    "Reservoir",
    "Rng",
    "SampleDecision",
    "SampledDecorator",
    "SamplingStats",
    "Stage",
    "StageEstimate",
    "TrafficProfile",
    "Weighted",
    "budget_probability",
    "estimate",
    "ramp",
    "sampled",
]

_REMOVED = {
    "ARes": (lambda: _reservoir._OneDrawPerItem, "use Reservoir (the same distribution)"),
    "AExpJ": (lambda: _reservoir.Reservoir, "use Reservoir (the same algorithm)"),
    "HASHES": (lambda: _hash.HASHES, "use typing.get_args(HashName)"),
}


def __getattr__(name: str) -> object:
    return moved_name(__name__, name, _REMOVED)

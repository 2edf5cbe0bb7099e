"""The pipeline: gates, samplers, budgets and caps in order, one explained decision.

Order is enforced: the pure stages (gates and local samplers) first, then the
stages that count in a store (budgets and caps), because those consume their
budget for every item they let through and should only see items the rest of the
pipeline has already accepted. When a later budget or cap refuses an item, the
budgets before it give their unit back (:meth:`Budget.refund`); a rate limiter
cannot, so put caps after budgets.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Generic, TypeAlias, TypeVar

from scalekit import _validate as check
from scalekit.errors import ConfigurationError
from scalekit.observability._metrics import default_registry as _metrics
from scalekit.sampling._budget import Budget, Cap
from scalekit.sampling._decision import SampleDecision
from scalekit.sampling._hash import to_bytes
from scalekit.sampling._stages import Fixed, Gate, Keyed, Weighted, _Sampler

__all__ = ["Pipeline", "SamplingStats", "Stage"]

T = TypeVar("T")

Stage: TypeAlias = Gate[Any] | Fixed | Keyed[Any] | Weighted[Any] | Budget[Any] | Cap[Any]

_new = tuple.__new__

#: a budget's or cap's answer: (sampled, probability, detail)
Outcome: TypeAlias = tuple[bool, float, str]
_Step: TypeAlias = tuple[str, "Budget[Any] | Cap[Any]"]


_SAMPLED = _metrics.counter("scalekit_sampling_sampled_total", "Items kept.", labels=("pipeline",))
_SKIPPED = _metrics.counter(
    "scalekit_sampling_skipped_total", "Items skipped, per stage.", labels=("pipeline", "stage")
)


@dataclass(frozen=True, slots=True)
class SamplingStats:
    """Counters since the pipeline was built: ``skipped`` maps a stage name to the
    items it skipped; ``considered == sampled + sum(skipped.values())``."""

    name: str
    considered: int
    sampled: int
    skipped: dict[str, int]


class Pipeline(Generic[T]):
    """Stages applied in order; the first that refuses an item decides.

    >>> from scalekit.sampling import Gate, Keyed, Pipeline
    >>> p = Pipeline(Gate("long", lambda m: len(m) >= 5), Keyed(0.5, key=lambda m: m))
    >>> p.decide("hi").explain()
    "skipped by gate 'long' (p=0)"

    ``decide`` is for sync code, ``adecide`` for asyncio (budgets and caps on
    Redis use the async client there). Counting is lock-free and cheap;
    :meth:`stats` reads the counters.
    """

    def __init__(self, *stages: Stage, name: str = "sampling") -> None:
        name = check.name(name, "a pipeline's name")
        self.name = name
        local: list[Gate[Any] | _Sampler[Any]] = []
        remote: list[Budget[Any] | Cap[Any]] = []
        seen: set[str] = set()
        for st in stages:
            if isinstance(st, Gate | Fixed | Keyed | Weighted):
                if remote:
                    raise ConfigurationError(
                        f"pipeline {name!r}: {st.kind} {st.name!r} comes after "
                        f"{remote[-1].kind} {remote[-1].name!r}; put gates and samplers before "
                        "budgets and caps (they count every item they let through)"
                    )
                local.append(st)
            elif isinstance(st, Budget | Cap):
                remote.append(st)
            else:
                raise ConfigurationError(
                    f"pipeline {name!r}: a stage must be a Gate, Fixed, Keyed, Weighted, Budget "
                    f"or Cap, got {st!r}"
                )
            if st.name in seen:
                raise ConfigurationError(
                    f"pipeline {name!r}: two stages are named {st.name!r}; names label the "
                    "skip counters, give each stage its own"
                )
            seen.add(st.name)
        self.stages: tuple[Stage, ...] = tuple(stages)
        self._local = tuple(local)
        self._remote = tuple(remote)
        # counters of this pipeline's own in the metrics registry; the compiled paths
        # count with next(counter.tick), one C call
        self._skip_counters = {s.name: _SKIPPED.attach(self, name, s.name) for s in self.stages}
        self._sampled_counter = _SAMPLED.attach(self, name)
        self._skips = {n: c.tick for n, c in self._skip_counters.items()}
        self._sampled = self._sampled_counter.tick
        last = self.stages[-1] if self.stages else None
        self._last = (last.name, last.kind) if last is not None else ("", "")
        self._gate_skip = {
            s.name: SampleDecision(False, s.name, "gate", 0.0)
            for s in self.stages
            if isinstance(s, Gate)
        }
        self._local_fn = self._compile_local()
        self.decide = self._compile_decide()  # type: ignore[method-assign,assignment]

    # -- compiled paths ----------------------------------------------------------------
    def _compile_local(self) -> Callable[[T], SampleDecision | float]:
        """The pure part: a skip decision, or the probability so far (a float)."""
        steps: list[tuple[bool, Any, Any, Any]] = []
        for st in self._local:
            if isinstance(st, Gate):
                steps.append((True, st.predicate, self._gate_skip[st.name], self._skips[st.name]))
            else:
                steps.append((False, st, st.name, self._skips[st.name]))
        steps_t = tuple(steps)

        def local(item: T) -> SampleDecision | float:
            prob = 1.0
            for is_gate, a, b, counter in steps_t:
                if is_gate:
                    if not a(item):
                        next(counter)
                        return b  # type: ignore[no-any-return]
                else:
                    p = a.probability(item)
                    prob *= p
                    if not a.draw(item, p):
                        next(counter)
                        return _new(SampleDecision, (False, b, "sampler", prob, ""))
            return prob

        return local

    def _compile_decide(self) -> Callable[[T], SampleDecision]:
        sampled = self._sampled
        if not self._remote:
            tail = self._local[-1] if self._local else None
            only_gates = all(isinstance(g, Gate) for g in self._local[:-1])
            if isinstance(tail, Keyed) and only_gates:
                return self._compile_gates_keyed(tail)
            if isinstance(tail, Fixed) and only_gates:
                return self._compile_gates_fixed(tail)
            last_name, last_kind = self._last
            local = self._local_fn

            def decide_local(item: T) -> SampleDecision:
                r = local(item)
                if r.__class__ is float:
                    next(sampled)
                    return _new(SampleDecision, (True, last_name, last_kind, r, ""))
                return r  # type: ignore[return-value]

            return decide_local

        return self._decide_remote

    def _compile_gates_fixed(self, fixed: Fixed) -> Callable[[T], SampleDecision]:
        """Gates then one fixed-rate sampler: one frame, prebuilt decisions."""
        gates = tuple(
            (g.predicate, self._gate_skip[g.name], self._skips[g.name])
            for g in self._local[:-1]
            if isinstance(g, Gate)
        )
        rng, rate = fixed._rng, fixed.rate
        yes = SampleDecision(True, fixed.name, "sampler", rate)  # type: ignore[arg-type]
        no = SampleDecision(False, fixed.name, "sampler", rate)  # type: ignore[arg-type]
        sampled, skipped = self._sampled, self._skips[fixed.name]

        def decide(item: T) -> SampleDecision:
            for predicate, skip, counter in gates:
                if not predicate(item):
                    next(counter)
                    return skip
            if rng() < rate:  # type: ignore[operator]
                next(sampled)
                return yes
            next(skipped)
            return no

        return decide

    def _compile_gates_keyed(self, keyed: Keyed[Any]) -> Callable[[T], SampleDecision]:
        """The commonest shape, gates then one keyed sampler: one frame, prebuilt
        decisions (their probability is constant), no allocation."""
        gates = tuple(
            (g.predicate, self._gate_skip[g.name], self._skips[g.name])
            for g in self._local[:-1]
            if isinstance(g, Gate)
        )
        key, h, threshold = keyed.key, keyed.hash, keyed.threshold
        yes = SampleDecision(True, keyed.name, "sampler", keyed.rate)  # type: ignore[arg-type]
        no = SampleDecision(False, keyed.name, "sampler", keyed.rate)  # type: ignore[arg-type]
        sampled, skipped = self._sampled, self._skips[keyed.name]
        if keyed.hash_name == "crc32":  # the hash inlined: see _hash.hash_function
            crc, mul, as_bytes = zlib.crc32, keyed.multiplier, to_bytes

            def decide_crc32(item: T) -> SampleDecision:
                for predicate, skip, counter in gates:
                    if not predicate(item):
                        next(counter)
                        return skip
                k = key(item)
                data = k.encode("utf-8", "surrogatepass") if k.__class__ is str else as_bytes(k)
                if (crc(data) * mul) & 0xFFFFFFFFFFFFFFFF < threshold:
                    next(sampled)
                    return yes
                next(skipped)
                return no

            return decide_crc32

        def decide(item: T) -> SampleDecision:
            for predicate, skip, counter in gates:
                if not predicate(item):
                    next(counter)
                    return skip
            if h(key(item)) < threshold:
                next(sampled)
                return yes
            next(skipped)
            return no

        return decide

    def _walk(self, prob: float) -> Generator[_Step, Outcome | None, SampleDecision]:
        """The budgets and caps, as a decision engine without I/O: it yields what to
        do next (``("decide", stage)`` or ``("refund", budget)``), receives the
        stage's outcome, and returns the decision. The sync and async drivers below
        only run the steps (tenacity's ``iter()`` shape)."""
        detail = ""
        for i, st in enumerate(self._remote):
            outcome = yield "decide", st
            assert outcome is not None
            ok, p, said = outcome
            prob = prob * p if ok or st.kind == "budget" else 0.0
            if not ok:
                # the budgets before this stage counted the item: give the units back
                for earlier in self._remote[:i]:
                    if isinstance(earlier, Budget):
                        yield "refund", earlier
                next(self._skips[st.name])
                return _new(SampleDecision, (False, st.name, st.kind, prob, said))
            if said:
                detail = said
        next(self._sampled)
        return _new(SampleDecision, (True, self._last[0], self._last[1], prob, detail))

    def _decide_remote(self, item: T) -> SampleDecision:
        r = self._local_fn(item)
        if isinstance(r, SampleDecision):
            return r
        walk = self._walk(r)
        result: Outcome | None = None
        try:
            while True:
                action, st = walk.send(result)
                if action == "decide":
                    result = st.decide(item)
                else:
                    result = None
                    st.refund(item)  # type: ignore[union-attr]
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def decide(self, item: T) -> SampleDecision:
        """Decide for ``item``: run the stages in order until one refuses it."""
        return self._decide_remote(item)  # replaced by a compiled path in __init__

    async def adecide(self, item: T) -> SampleDecision:
        """:meth:`decide` for asyncio: budgets and caps on Redis are awaited."""
        if not self._remote:
            return self.decide(item)
        r = self._local_fn(item)
        if isinstance(r, SampleDecision):
            return r
        walk = self._walk(r)
        result: Outcome | None = None
        try:
            while True:
                action, st = walk.send(result)
                if action == "decide":
                    result = await st.adecide(item)
                else:
                    result = None
                    await st.arefund(item)  # type: ignore[union-attr]
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    # -- introspection -------------------------------------------------------------------
    def local_probability(self, item: T) -> float:
        """The chance ``item`` passes the gates and local samplers (no draw, no count);
        budgets and caps are left out: they depend on the traffic."""
        prob = 1.0
        for st in self._local:
            if isinstance(st, Gate):
                if not st.predicate(item):
                    return 0.0
            else:
                prob *= st.probability(item)
        return prob

    def stats(self) -> SamplingStats:
        """The counters: considered, sampled, and skipped per stage."""
        skipped = {name: int(c.value) for name, c in self._skip_counters.items()}
        sampled = int(self._sampled_counter.value)
        return SamplingStats(self.name, sampled + sum(skipped.values()), sampled, skipped)

    def __repr__(self) -> str:
        return f"Pipeline({', '.join(map(repr, self.stages))}, name={self.name!r})"

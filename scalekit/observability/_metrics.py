"""Counters, gauges and histograms, and the registry that names them.

The hot path is one call: ``Counter.inc`` *is* ``itertools.count.__next__`` (one C
call, atomic under the GIL, no lock and no Python frame), so counting costs what
the ``itertools.count`` idiom the primitives already use costs, and nothing else
happens until an exporter or a health report reads the registry. Amounts other than
one (``Counter.add``), gauges' ``inc``/``dec`` and histograms take a short lock.

A primitive creates its families once, at construction, and takes a child of its
own with :meth:`Family.attach` (``family.attach(self, name)``): its ``stats()``
read that child, so two breakers named alike each count their own calls, while the
exported series sums every live child of a label set plus what the children of
collected primitives counted (a counter never goes down when a primitive is
garbage-collected). A gauge may be a callback (:meth:`Gauge.set_function`), read at
collection: a breaker's state, a client's open connections.

Cardinality is bounded by construction: label values name a primitive (a limiter,
a cache, a pool), a state or a stage, never a user key, and a family refuses to
grow past ``max_series`` children: further label sets share one overflow child
whose label values are all ``"_other"`` (counted, never raised on a hot path).
"""

from __future__ import annotations

import itertools
import math
import re
import threading
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from scalekit.errors import ConfigurationError

__all__ = [
    "DEFAULT_BUCKETS",
    "Counter",
    "Family",
    "Gauge",
    "Histogram",
    "Metric",
    "MetricKind",
    "Registry",
    "Sample",
    "default_registry",
]

MetricKind = Literal["counter", "gauge", "histogram"]

#: seconds, from 1 ms to 10 s (the Prometheus client's defaults, minus the tail)
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

_METRIC_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_UNITS = frozenset({"", "seconds", "bytes", "ratio", "connections", "rows", "calls"})
OVERFLOW = "_other"
_INF = math.inf
_MAX_LABEL_VALUE = 128


def _count_of(counter: itertools.count[int]) -> int:
    """How many times ``next(counter)`` ran: the repr of a ``count()`` is ``count(N)``.

    This is the one place that reads an ``itertools.count`` (pinned by a test)."""
    return int(repr(counter)[6:-1])


class Counter:
    """A monotonic count.

    ``inc()`` adds one and is the bound ``__next__`` of an ``itertools.count`` (its
    return value means nothing); on the hottest paths ``next(counter.tick)`` does
    the same a few ns faster (``tick`` is that ``itertools.count``).
    ``add(amount)`` adds a finite amount >= 0 under a lock (seconds spent, bytes
    sent). ``value`` reads the total.
    """

    __slots__ = ("_added", "_it", "_lock", "inc", "tick")

    inc: Callable[[], object]

    def __init__(self) -> None:
        self._it = self.tick = itertools.count()
        self.inc = self._it.__next__
        self._added = 0.0
        self._lock = threading.Lock()

    def add(self, amount: float) -> None:
        try:
            ok = 0 <= amount < _INF and amount is not True  # NaN compares False
        except TypeError:
            ok = False
        if not ok:
            raise ConfigurationError(f"a counter adds a finite amount >= 0, got {amount!r}")
        with self._lock:
            self._added += amount

    @property
    def value(self) -> float:
        n = _count_of(self._it)
        return n + self._added if self._added else n

    def __repr__(self) -> str:
        return f"<Counter {self.value}>"


class Gauge:
    """A value that goes up and down: ``set(v)`` is one attribute store; ``inc`` and
    ``dec`` take a lock. ``set_function(fn)`` makes it a callback gauge: ``value``
    is ``fn()``, called at collection only (NaN when ``fn`` raises)."""

    __slots__ = ("_fn", "_lock", "_value")

    def __init__(self) -> None:
        self._value = 0.0
        self._lock = threading.Lock()
        self._fn: Callable[[], float] | None = None

    def set_function(self, fn: Callable[[], float]) -> None:
        if not callable(fn):
            raise ConfigurationError(f"a gauge's function must be callable, got {fn!r}")
        self._fn = fn

    def set(self, value: float) -> None:
        self._value = value

    def inc(self, amount: float = 1.0) -> None:
        with self._lock:
            self._value += amount

    def dec(self, amount: float = 1.0) -> None:
        with self._lock:
            self._value -= amount

    @property
    def value(self) -> float:
        fn = self._fn
        if fn is None:
            return self._value
        try:
            return float(fn())
        except Exception:
            return math.nan

    def __repr__(self) -> str:
        return f"<Gauge {self.value}>"


class Histogram:
    """Observations counted in fixed buckets (``le`` semantics: bucket ``i`` counts
    ``v <= bounds[i]``, plus ``+Inf``). NaN observations are dropped."""

    __slots__ = ("_bounds", "_counts", "_lock", "_sum")

    def __init__(self, buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        self._bounds = _check_buckets(buckets)
        self._counts = [0] * (len(self._bounds) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        if value != value:  # NaN: no bucket holds it
            return
        i = bisect_left(self._bounds, value)
        with self._lock:
            self._counts[i] += 1
            self._sum += value

    def buckets(self) -> tuple[tuple[float, int], ...]:
        """Cumulative ``(upper bound, count)`` pairs, the last bound ``+inf``."""
        with self._lock:
            counts = list(self._counts)
        out = []
        total = 0
        for bound, n in zip((*self._bounds, math.inf), counts, strict=True):
            total += n
            out.append((bound, total))
        return tuple(out)

    @property
    def sum(self) -> float:
        return self._sum

    @property
    def count(self) -> int:
        return sum(self._counts)

    def _merge(self, other: Histogram) -> None:
        """Add ``other``'s observations (same buckets) to this one."""
        with other._lock:
            counts, total = list(other._counts), other._sum
        with self._lock:
            for i, n in enumerate(counts):
                self._counts[i] += n
            self._sum += total


def _check_buckets(buckets: Sequence[float]) -> tuple[float, ...]:
    bounds = tuple(float(b) for b in buckets)
    if not bounds or any(not math.isfinite(b) for b in bounds):
        raise ConfigurationError(f"histogram buckets must be finite numbers, got {buckets!r}")
    if any(a >= b for a, b in itertools.pairwise(bounds)):
        raise ConfigurationError(f"histogram buckets must increase strictly, got {buckets!r}")
    return bounds


@dataclass(frozen=True, slots=True)
class Sample:
    """One series of a :class:`Metric`: its labels and value. For a histogram,
    ``value`` is the sum of the observations, ``buckets`` the cumulative
    ``(le, count)`` pairs (the last one ``+inf``, its count the number of
    observations)."""

    labels: Mapping[str, str]
    value: float
    buckets: tuple[tuple[float, int], ...] = ()

    @property
    def count(self) -> int:
        return self.buckets[-1][1] if self.buckets else 0


@dataclass(frozen=True, slots=True)
class Metric:
    """A metric family as read from the registry: what exporters see."""

    name: str
    kind: MetricKind
    help: str
    unit: str
    labelnames: tuple[str, ...]
    samples: tuple[Sample, ...] = field(default=())


M = TypeVar("M", Counter, Gauge, Histogram)


class Family(Generic[M]):
    """The series of one metric name, one child per label set.

    ``labels(...)`` returns the child for a set of label values (create it once,
    keep it, and count on it). A family without label names has one child:
    ``labels()``.
    """

    __slots__ = (
        "_children",
        "_factory",
        "_lock",
        "_overflow",
        "_owned",
        "_retired",
        "help",
        "kind",
        "labelnames",
        "max_series",
        "name",
        "unit",
    )

    def __init__(
        self,
        name: str,
        kind: MetricKind,
        help: str,
        unit: str,
        labelnames: tuple[str, ...],
        factory: Callable[[], M],
        max_series: int,
    ) -> None:
        self.name = name
        self.kind = kind
        self.help = help
        self.unit = unit
        self.labelnames = labelnames
        self.max_series = max_series
        self._factory: Callable[[], M] = factory
        self._children: dict[tuple[str, ...], M] = {}
        self._lock = threading.Lock()
        self._overflow = 0
        # children owned by one primitive each (attach), and what the children of
        # primitives since collected counted (counters and histograms only)
        self._owned: dict[tuple[str, ...], list[tuple[Callable[[], object], M]]] = {}
        self._retired: dict[tuple[str, ...], M] = {}

    def _check_values(self, values: tuple[str, ...], by_name: Mapping[str, str]) -> tuple[str, ...]:
        if by_name:
            if values or set(by_name) != set(self.labelnames):
                raise ConfigurationError(
                    f"{self.name} takes the labels {list(self.labelnames)}, got "
                    f"{list(values) + sorted(by_name)}"
                )
            values = tuple(by_name[n] for n in self.labelnames)
        if len(values) != len(self.labelnames):
            raise ConfigurationError(
                f"{self.name} takes {len(self.labelnames)} label values "
                f"{list(self.labelnames)}, got {list(values)}"
            )
        for v in values:
            if not isinstance(v, str) or not v or len(v) > _MAX_LABEL_VALUE:
                raise ConfigurationError(
                    f"a label value is a non-empty str of at most {_MAX_LABEL_VALUE} "
                    f"characters (a primitive's name, a state, a stage), got {v!r}"
                )
        return values

    def _bounded(self, values: tuple[str, ...]) -> tuple[str, ...]:
        """``values``, or the overflow label set if they would be a series past
        ``max_series`` (lock held)."""
        known = self._children.keys() | self._owned.keys() | self._retired.keys()
        if values in known or len(known) < self.max_series:
            return values
        self._overflow += 1
        return (OVERFLOW,) * len(self.labelnames)

    def attach(self, owner: object, *values: str, **by_name: str) -> M:
        """A new child counted for ``owner`` alone (one primitive instance), exported
        under these label values together with every other child of the same
        values. ``owner`` is held weakly; once it is collected, its child's count
        stays in the series (a gauge's value leaves it)."""
        values = self._check_values(values, by_name)
        ref: Callable[[], object]
        try:
            ref = weakref.ref(owner)
        except TypeError:  # not weakly referenceable: kept for the process' life
            ref = lambda: owner  # noqa: E731
        child = self._factory()
        with self._lock:
            owned = self._owned.get(values)
            if owned is None:
                values = self._bounded(values)
                owned = self._owned.setdefault(values, [])
            if len(owned) >= 8 and not len(owned) & (len(owned) - 1):
                self._prune(values, owned)  # at 8, 16, 32, ... children
            owned.append((ref, child))
        return child

    def _prune(self, values: tuple[str, ...], owned: list[tuple[Callable[[], object], M]]) -> None:
        """Fold the children of collected owners into the retired child (lock held)."""
        live = [(r, c) for r, c in owned if r() is not None]
        if len(live) == len(owned):
            return
        if self.kind != "gauge":
            retired = self._retired.get(values)
            if retired is None:
                retired = self._retired[values] = self._factory()
            for r, c in owned:
                if r() is None:
                    if isinstance(c, Histogram):
                        assert isinstance(retired, Histogram)
                        retired._merge(c)
                    elif isinstance(c, Counter) and c.value:
                        assert isinstance(retired, Counter)
                        retired.add(c.value)
        owned[:] = live

    def labels(self, *values: str, **by_name: str) -> M:
        child = None if by_name else self._children.get(values)
        if child is not None:
            return child
        values = self._check_values(values, by_name)
        with self._lock:
            child = self._children.get(values)
            if child is None:
                values = self._bounded(values)
                child = self._children.get(values)
                if child is None:
                    child = self._children[values] = self._factory()
        return child

    @property
    def overflowed(self) -> int:
        """Label sets refused for ``max_series`` (they count on the ``_other`` child)."""
        return self._overflow

    def collect(self) -> Metric:
        with self._lock:
            for values, owned in list(self._owned.items()):
                self._prune(values, owned)
            groups: dict[tuple[str, ...], list[M]] = {}
            for values, child in self._children.items():
                groups.setdefault(values, []).append(child)
            for values, retired in self._retired.items():
                groups.setdefault(values, []).append(retired)
            for values, owned in self._owned.items():
                groups.setdefault(values, []).extend(c for _, c in owned)
        samples = []
        for values, children in groups.items():
            if not children:
                continue
            labels = dict(zip(self.labelnames, values, strict=True))
            if isinstance(children[0], Histogram):
                total = 0.0
                counts: list[int] | None = None
                bounds: list[float] = []
                for h in children:
                    assert isinstance(h, Histogram)
                    pairs = h.buckets()
                    total += h.sum
                    if counts is None:
                        bounds = [b for b, _ in pairs]
                        counts = [n for _, n in pairs]
                    else:
                        counts = [a + n for a, (_, n) in zip(counts, pairs, strict=True)]
                assert counts is not None
                samples.append(Sample(labels, total, tuple(zip(bounds, counts, strict=True))))
            else:
                samples.append(Sample(labels, sum(c.value for c in children)))
        return Metric(self.name, self.kind, self.help, self.unit, self.labelnames, tuple(samples))


def _check_name(name: str, kind: MetricKind, unit: str) -> None:
    if not isinstance(name, str) or not _METRIC_NAME.match(name) or name.startswith("__"):
        raise ConfigurationError(
            f"a metric name is [a-zA-Z_][a-zA-Z0-9_]* (not starting with '__'), got {name!r}"
        )
    if unit not in _UNITS:
        raise ConfigurationError(f"unit must be one of {sorted(_UNITS)}, got {unit!r}")
    base = name.removesuffix("_total")
    if kind == "counter" and base == name:
        raise ConfigurationError(f"a counter's name ends in '_total', got {name!r}")
    if kind != "counter" and base != name:
        raise ConfigurationError(f"only a counter's name ends in '_total', got {name!r}")
    if unit and not base.endswith(f"_{unit}"):
        raise ConfigurationError(f"a metric in {unit} ends its name with _{unit}: {name!r}")


def _check_labels(labelnames: Iterable[str]) -> tuple[str, ...]:
    names = tuple(labelnames)
    for n in names:
        if not isinstance(n, str) or not _METRIC_NAME.match(n) or n.startswith("__"):
            raise ConfigurationError(f"a label name is [a-zA-Z_][a-zA-Z0-9_]*, got {n!r}")
        if n == "le":
            raise ConfigurationError("'le' is reserved for histogram buckets")
    if len(set(names)) != len(names):
        raise ConfigurationError(f"label names repeat: {names!r}")
    return names


class Registry:
    """Named metric families and the stats sources read at collection time.

    ``counter``/``gauge``/``histogram`` return the family of that name, creating it
    on first use (asking again with the same definition returns the same family, so
    two limiters share ``scalekit_ratelimit_allowed_total`` with their own label).
    ``register_source`` adapts an existing ``stats()`` method (see
    :mod:`scalekit.observability._sources`). ``collect()`` reads everything; nothing
    is read until something calls it.
    """

    def __init__(self, *, max_series: int = 1000) -> None:
        if isinstance(max_series, bool) or not isinstance(max_series, int) or max_series < 1:
            raise ConfigurationError(f"max_series must be an int >= 1, got {max_series!r}")
        self.max_series = max_series
        self._lock = threading.Lock()
        self._families: dict[str, Family[Any]] = {}
        self._sources: dict[tuple[str, str], Any] = {}
        self._watchers: list[Callable[[], None]] = []

    def _watch(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` after a family or a source is added (exporters that must declare
        instruments up front use this); never on a hot path."""
        with self._lock:
            self._watchers.append(fn)

    def _unwatch(self, fn: Callable[[], None]) -> None:
        """Stop calling ``fn`` (added by :meth:`_watch`); no-op if it is not there."""
        with self._lock:
            if fn in self._watchers:
                self._watchers.remove(fn)

    def _changed(self) -> None:
        with self._lock:
            watchers = list(self._watchers)
        for fn in watchers:
            fn()

    def _family(
        self,
        name: str,
        kind: MetricKind,
        help: str,
        unit: str,
        labels: Iterable[str],
        factory: Callable[[], M],
    ) -> Family[M]:
        _check_name(name, kind, unit)
        labelnames = _check_labels(labels)
        with self._lock:
            fam = self._families.get(name)
            if fam is None:
                fam = self._families[name] = Family(
                    name, kind, help, unit, labelnames, factory, self.max_series
                )
                created = True
            else:
                created = False
        if created:
            self._changed()
            return fam
        if (fam.kind, fam.unit, fam.labelnames) != (kind, unit, labelnames):
            raise ConfigurationError(
                f"metric {name!r} is already a {fam.kind} with labels {list(fam.labelnames)}"
                f" and unit {fam.unit!r}"
            )
        return fam

    def counter(
        self, name: str, help: str, *, labels: Iterable[str] = (), unit: str = ""
    ) -> Family[Counter]:
        return self._family(name, "counter", help, unit, labels, Counter)

    def gauge(
        self, name: str, help: str, *, labels: Iterable[str] = (), unit: str = ""
    ) -> Family[Gauge]:
        return self._family(name, "gauge", help, unit, labels, Gauge)

    def histogram(
        self,
        name: str,
        help: str,
        *,
        labels: Iterable[str] = (),
        unit: str = "",
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> Family[Histogram]:
        bounds = _check_buckets(buckets)
        return self._family(name, "histogram", help, unit, labels, lambda: Histogram(bounds))

    def register_source(
        self, kind: str, stats: Callable[[], object], *, name: str | None = None
    ) -> None:
        """Export what ``stats()`` returns, read at each collection.

        ``kind`` says the shape (``"ratelimit"``, ``"cache"``, ``"breaker"``,
        ``"bulkhead"``, ``"retry"``, ``"sampling"``, ``"tasks"``, ``"pool"``,
        ``"loader"``, ``"redis"``: a ``RedisBackend``'s auto-pipeline figures, its pools
        report natively); ``stats`` returns one stats object, a list of them, or a
        mapping of name to stats. ``name`` labels the series when the stats carry
        no name of their own (a rate limiter's dict, a bulkhead). Registering the
        same kind and name again replaces the earlier source.
        """
        from scalekit.observability._sources import Source

        source = Source.build(kind, stats, name)
        with self._lock:
            self._sources[(kind, source.key)] = source
        self._changed()

    def unregister_source(self, kind: str, name: str | None = None) -> None:
        """Forget the source registered with this ``kind`` and ``name`` (the ``name=``
        given, else the name of the primitive whose bound ``stats`` was given)."""
        with self._lock:
            self._sources.pop((kind, name or ""), None)

    def read_sources(self, kinds: Iterable[str] | None = None) -> list[tuple[str, str, Any]]:
        """``(kind, name, stats object)`` for every registered source of ``kinds``
        (all by default); a source that raises is skipped."""
        wanted = None if kinds is None else set(kinds)
        with self._lock:
            sources = list(self._sources.values())
        out: list[tuple[str, str, Any]] = []
        for s in sources:
            if wanted is None or s.kind in wanted:
                out.extend((s.kind, n, obj) for n, obj in s.read())
        return out

    def collect(self) -> list[Metric]:
        """Every family, native and from sources, sorted by name."""
        with self._lock:
            families = list(self._families.values())
            sources = list(self._sources.values())
        merged: dict[str, Metric] = {f.name: f.collect() for f in families}
        native = set(merged)
        for s in sources:
            for metric in s.collect():
                if metric.name in native:
                    # the primitives report natively now: a source registered for one
                    # (a breaker's snapshot, say) must not export its series twice
                    continue
                prev = merged.get(metric.name)
                if prev is None:
                    merged[metric.name] = metric
                elif (prev.kind, prev.labelnames) != (metric.kind, metric.labelnames):
                    continue
                else:
                    merged[metric.name] = Metric(
                        prev.name,
                        prev.kind,
                        prev.help,
                        prev.unit,
                        prev.labelnames,
                        prev.samples + metric.samples,
                    )
        return [merged[k] for k in sorted(merged)]


#: the process-wide registry the primitives report into (and exporters read)
default_registry = Registry()

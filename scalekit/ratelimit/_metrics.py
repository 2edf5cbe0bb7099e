"""The rate limiters' metrics: native counters in :mod:`scalekit.observability`'s
registry, and the one shape their ``stats()`` return.

Every store (one per tier) owns one counter of each family below, labelled
``limiter`` (the limiter's ``name``), ``algorithm`` and ``tier`` (``"none"`` for an
untiered limiter): bounded by configuration, never a user key. ``stats()`` sums the
limiter's own counters, so two limiters named alike keep their own counts while the
exported series of that name sums both. A count is one call to an
``itertools.count``'s ``__next__`` (no lock, no Python frame): the in-memory hit costs
what its ``+= 1`` under the store's lock cost.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any

from scalekit.observability._metrics import Counter, Family, default_registry

__all__ = ["NO_TIER", "ConcurrencyStats", "RateLimiterStats", "StoreCounters"]

#: the ``tier`` label of an untiered limiter
NO_TIER = "none"
_LABELS = ("limiter", "algorithm", "tier")


def _counter(name: str, help: str, labels: tuple[str, ...] = _LABELS) -> Family[Counter]:
    return default_registry.counter(name, help, labels=labels)


ALLOWED = _counter("scalekit_ratelimit_allowed_total", "Hits allowed.")
DENIED = _counter("scalekit_ratelimit_denied_total", "Hits denied (over the limit).")
DEGRADED = _counter(
    "scalekit_ratelimit_degraded_total",
    "Decisions taken by the failure policy while the backend was down.",
)
REFUSED_FULL = _counter(
    "scalekit_ratelimit_refused_full_total", "Hits refused because the in-memory store was full."
)
BACKEND_ERRORS = _counter("scalekit_ratelimit_backend_errors_total", "Backend calls that failed.")
BACKEND_EPISODES = _counter(
    "scalekit_ratelimit_backend_episodes_total",
    "Times the backend went down (one per outage, not per call).",
)
CORRUPT_KEYS = _counter(
    "scalekit_ratelimit_corrupt_keys_total",
    "Keys whose Redis state was not what the script expects, reset.",
)
REFUNDS = _counter("scalekit_ratelimit_refunds_total", "Refunds given (calls, not units).")

_CC_LABELS = ("limiter",)
CC_ACQUIRED = _counter("scalekit_concurrency_acquired_total", "Leases granted.", labels=_CC_LABELS)
CC_REJECTED = _counter(
    "scalekit_concurrency_rejected_total", "Leases refused (at the limit).", labels=_CC_LABELS
)
CC_DEGRADED = _counter(
    "scalekit_concurrency_degraded_total",
    "Operations decided by the failure policy while the backend was down.",
    labels=_CC_LABELS,
)
CC_BACKEND_ERRORS = _counter(
    "scalekit_concurrency_backend_errors_total", "Backend calls that failed.", labels=_CC_LABELS
)
CC_CORRUPT_KEYS = _counter(
    "scalekit_concurrency_corrupt_keys_total",
    "Keys whose Redis state was not what the script expects, reset.",
    labels=_CC_LABELS,
)


def attach(family: Family[Counter], owner: object, *values: str) -> Counter:
    """A counter of ``owner``'s own, exported under ``values`` with every other
    owner's of the same values (``Family.attach``)."""
    child: Counter = family.attach(owner, *values)
    return child


class StoreCounters:
    """One store's counters (``owner=None``: counted, never exported: the failure
    policy's local fallback stores, whose decisions count as ``degraded``)."""

    __slots__ = (
        "allowed",
        "backend_episodes",
        "backend_errors",
        "corrupt_keys",
        "degraded",
        "denied",
        "refunds",
        "refused_full",
    )

    def __init__(self, owner: object | None, limiter: str, algorithm: str, tier: str) -> None:
        labels = (limiter[:128], algorithm, tier[:128])  # a label value holds 128 characters

        def make(family: Family[Counter]) -> Counter:
            return Counter() if owner is None else attach(family, owner, *labels)

        self.allowed = make(ALLOWED)
        self.denied = make(DENIED)
        self.degraded = make(DEGRADED)
        self.refused_full = make(REFUSED_FULL)
        self.backend_errors = make(BACKEND_ERRORS)
        self.backend_episodes = make(BACKEND_EPISODES)
        self.corrupt_keys = make(CORRUPT_KEYS)
        self.refunds = make(REFUNDS)


class _MappingCompat:
    """``stats()["allowed"]``: the ``dict`` these ``stats()`` returned before 0.x.

    Deprecated, kept for one release: read the attributes (``stats().allowed``)."""

    __slots__ = ()

    def __getitem__(self, name: str) -> int:
        if name not in self.keys():
            raise KeyError(name)
        value: int = getattr(self, name)
        return value

    def keys(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self))  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.keys()}


@dataclass(frozen=True, slots=True)
class RateLimiterStats(_MappingCompat):
    """What a rate limiter counted since its creation (every tier), read from its
    counters in the metrics registry.

    ``allowed``/``denied``: decisions (hits and peeks) made by the backend;
    ``degraded``: decisions made by the failure policy (backend down, a store full, a
    key corrupt again right after its reset); ``refused_full``: hits of new keys
    refused by a full in-memory store; ``backend_errors``: backend calls that failed;
    ``backend_episodes``: outages (one per outage, not per call); ``corrupt_keys``:
    Redis keys whose state was not what the script expects, reset (that key's
    problem, never an outage); ``refunds``: refund calls.
    """

    allowed: int
    denied: int
    degraded: int
    refused_full: int
    backend_errors: int
    backend_episodes: int
    corrupt_keys: int
    refunds: int


@dataclass(frozen=True, slots=True)
class ConcurrencyStats(_MappingCompat):
    """What a concurrency limiter counted since its creation.

    ``acquired``/``rejected``: lease requests granted and refused (at the limit);
    ``degraded``: operations decided by the failure policy; ``backend_errors``:
    backend calls that failed; ``corrupt_keys``: keys reset after a data error."""

    acquired: int
    rejected: int
    degraded: int
    backend_errors: int
    corrupt_keys: int


def total(counters: list[Counter]) -> int:
    return int(sum(c.value for c in counters))

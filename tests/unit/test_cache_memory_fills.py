"""The memory backend's fill protocol: in-process leases and fences, as Redis'."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from scalekit.cache import Cache, MemoryCacheBackend
from scalekit.cache._freshness import EntryMeta
from scalekit.errors import ConfigurationError
from scalekit.testing import FakeClock

INVALIDATIONS: dict[str, Callable[[MemoryCacheBackend], object]] = {
    "delete": lambda b: b.delete("ns:v1:{a}"),
    "tag": lambda b: b.delete_tags(["t"]),
    "prefix": lambda b: b.delete_prefix("ns:"),
    "clear": lambda b: b.clear(),
    "set": lambda b: b.set("ns:v1:{a}", -1, EntryMeta(stored_at=0.0, ttl=60.0), 60.0),
}
UNRELATED: dict[str, Callable[[MemoryCacheBackend], object]] = {
    "delete": lambda b: b.delete("ns:v1:{b}"),
    "tag": lambda b: b.delete_tags(["other"]),
    "prefix": lambda b: b.delete_prefix("other:"),
    "set": lambda b: b.set("ns:v1:{b}", -1, EntryMeta(stored_at=0.0, ttl=60.0), 60.0),
}


def _meta(clock: FakeClock) -> EntryMeta:
    return EntryMeta(stored_at=clock.now(), ttl=60.0)


@pytest.mark.parametrize("how", INVALIDATIONS)
def test_an_invalidation_covering_a_fill_voids_it(how: str) -> None:
    clock = FakeClock()
    b = MemoryCacheBackend(clock=clock)
    ticket = b.begin_fill("ns:v1:{a}", frozenset({"t"}), (), clock.now())
    assert ticket.state == "acquired"
    INVALIDATIONS[how](b)
    assert not b.commit_fill(ticket, 1, _meta(clock), 60.0)
    assert (b.get("ns:v1:{a}") or (None,))[0] == (-1 if how == "set" else None)
    # the lease went with the fence: the next fill takes it at once
    assert b.begin_fill("ns:v1:{a}", frozenset(), (), clock.now()).state == "acquired"


@pytest.mark.parametrize("how", UNRELATED)
def test_an_invalidation_of_something_else_leaves_a_fill_alone(how: str) -> None:
    clock = FakeClock()
    b = MemoryCacheBackend(clock=clock)
    ticket = b.begin_fill("ns:v1:{a}", frozenset({"t"}), (), clock.now())
    UNRELATED[how](b)
    assert b.commit_fill(ticket, 1, _meta(clock), 60.0)
    entry = b.get("ns:v1:{a}")
    assert entry is not None and entry[0] == 1
    assert b.delete_tags(["t"]) == 1  # stored with its fill's tags


def test_leases_fresh_answers_and_margins() -> None:
    clock = FakeClock()
    b = MemoryCacheBackend(clock=clock, lease_ttl=5.0)
    first = b.begin_fill("k", frozenset(), (), clock.now())
    second = b.begin_fill("k", frozenset(), (), clock.now())
    assert (first.state, second.state) == ("acquired", "held")
    b.release(second)  # not its lease: the first keeps it
    assert b.begin_fill("k", frozenset(), (), clock.now()).state == "held"
    assert b.commit_fill(first, "v", _meta(clock), 60.0)
    fresh = b.begin_fill("k", frozenset(), (), clock.now())
    assert fresh.state == "fresh" and fresh.entry is not None and fresh.entry[0] == "v"
    # fresh for 60 s: a refresh asking for more than that (margin) gets the lease
    assert b.begin_fill("k", frozenset(), (), clock.now(), margin=61.0).state == "acquired"
    # a lease never given back expires after lease_ttl
    clock.advance(5.0)
    assert b.begin_fill("k", frozenset(), (), clock.now(), margin=61.0).state == "acquired"


def test_fills_that_never_end_are_bounded_and_refused_after_fence_ttl() -> None:
    clock = FakeClock()
    b = MemoryCacheBackend(clock=clock, fence_ttl=10.0)
    old = [b.begin_fill(f"old{i}", frozenset(), (), clock.now()) for i in range(100)]
    clock.advance(10.0)
    for i in range(100):
        b.begin_fill(f"new{i}", frozenset(), (), clock.now())
    assert len(b._fences) <= 128  # the expired fences were pruned
    assert not any(k.startswith("old") for k in b._fences)
    assert not b.commit_fill(old[0], 1, _meta(clock), 60.0)
    # every ended fill drops its fence: nothing is kept for a key without fills
    c = MemoryCacheBackend(clock=clock)
    t = c.begin_fill("k", frozenset(), (), clock.now())
    c.release(t)
    assert not c._fences and not c._leases


def test_a_backend_object_brings_its_clock() -> None:
    clock, other = FakeClock(), FakeClock()
    assert Cache(MemoryCacheBackend(clock=clock), clock=clock)._clock is clock
    assert Cache(MemoryCacheBackend(clock=clock))._clock is clock
    with pytest.raises(ConfigurationError, match="another clock"):
        Cache(MemoryCacheBackend(clock=clock), clock=other)

"""The Redis cache's fence protocol against a model, under any interleaving.

Fills (``begin_fill`` ... ``commit_fill``) and invalidations (``delete``,
``delete_tags``, ``delete_prefix``, ``clear``, and a direct ``set``) from two
backends on one server (two processes) are interleaved by hypothesis. The model:
a fill stores if and only if no invalidation covering it ran between its begin and
its commit; after any covering invalidation, the key reads as absent until a later
write. The real Lua scripts run (fakeredis executes them with a Lua runtime).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import fakeredis
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from scalekit import RedisBackend
from scalekit.cache._backend import FillTicket
from scalekit.cache._freshness import EntryMeta
from scalekit.cache._redis import RedisCacheBackend
from scalekit.testing import FakeClock

KEYS = ["a", "b"]
NAMESPACES = ["n1", "n2"]
TAGS = ["t1", "t2"]


def _key(ns: str, k: str) -> str:
    return f"{ns}:v1:{{{k}}}"


@dataclass
class _Fill:
    key: str
    tags: frozenset[str]
    heads: tuple[str, ...]
    ticket: FillTicket
    value: int
    voided: bool = False


@dataclass
class _Model:
    stored: dict[str, int] = field(default_factory=dict)
    open: dict[int, _Fill] = field(default_factory=dict)
    #: keys in each tag's Redis set: every key whose fill began (a fill registers in
    #: its tags' sets before it loads) or that was stored with the tag since the tag
    #: was last invalidated (a later write without the tag does not remove it, so
    #: tag invalidation may drop more than the current tags say: the safe side)
    members: dict[str, set[str]] = field(default_factory=dict)

    def void(self, covers: object) -> None:
        assert callable(covers)
        for fill in self.open.values():
            if covers(fill.key, fill.tags, fill.heads):
                fill.voided = True

    def drop(self, keys: object) -> None:
        assert callable(keys)
        for key in [k for k in self.stored if keys(k)]:
            del self.stored[key]

    def store(self, key: str, value: int, tags: frozenset[str]) -> None:
        self.stored[key] = value
        for tag in tags:
            self.members.setdefault(tag, set()).add(key)


WHO = st.sampled_from([0, 1])
NS = st.sampled_from(NAMESPACES)
KEY = st.sampled_from(KEYS)
op = st.one_of(
    st.tuples(st.just("begin"), WHO, NS, KEY, st.frozensets(st.sampled_from(TAGS), max_size=2)),
    st.tuples(st.just("commit"), st.integers(0, 7)),
    st.tuples(st.just("delete"), WHO, NS, KEY),
    st.tuples(st.just("tags"), WHO, st.sampled_from(TAGS)),
    st.tuples(st.just("prefix"), WHO, NS),
    st.tuples(st.just("clear"), WHO),
    st.tuples(st.just("set"), WHO, NS, KEY),
)


@pytest.mark.parametrize("cluster", [False, True], ids=["one-server", "cluster-protocol"])
@settings(max_examples=150, deadline=None)
@given(st.lists(op, min_size=1, max_size=30))
# found on the Cluster protocol: a refused commit must not put its key back into a
# tag set that an invalidation (here clear) took meanwhile
@example(
    ops=[
        ("begin", 0, "n1", "a", frozenset({"t2"})),
        ("clear", 0),
        ("set", 0, "n1", "a"),
        ("commit", 0),
        ("tags", 0, "t2"),
    ]
)
def test_a_fill_stores_iff_nothing_covering_it_was_invalidated_meanwhile(
    cluster: bool, ops: list[tuple[object, ...]]
) -> None:
    """``cluster``: the Redis Cluster protocol (tag sets joined and taken in their
    own calls, invalidations sent slot by slot, SCAN through the client) on the same
    server, so hypothesis explores it too (the real Cluster runs the contract suite)."""
    clock = FakeClock()
    server = fakeredis.FakeServer()
    backends = [
        RedisCacheBackend(
            RedisBackend("redis://fake", client=fakeredis.FakeRedis(server=server)),
            clock=clock,
        )
        for _ in range(2)
    ]
    for b in backends:
        b.cluster = cluster
    model = _Model()
    fills: list[_Fill] = []
    writes = 0

    def meta() -> EntryMeta:
        return EntryMeta(stored_at=clock.now(), ttl=60.0, generation=writes)

    for step in ops:
        kind = step[0]
        if kind == "begin":
            _, who, ns, k, tags = step
            assert isinstance(who, int) and isinstance(tags, frozenset)
            key = _key(str(ns), str(k))
            heads = (f"{ns}:", f"{ns}:v1:")
            ticket = backends[who].begin_fill(key, tags, heads, clock.now())
            if ticket.state == "fresh":
                assert key in model.stored
                continue
            for tag in tags:
                model.members.setdefault(tag, set()).add(key)
            fill = _Fill(key, tags, heads, ticket, value=len(fills) + 1000)
            model.open[len(fills)] = fill
            fills.append(fill)
        elif kind == "commit":
            n = step[1]
            assert isinstance(n, int)
            if n not in model.open:
                continue
            fill = model.open.pop(n)
            writes += 1
            stored = backends[0].commit_fill(fill.ticket, fill.value, meta(), 60.0)
            assert stored == (not fill.voided), (fill, ops)
            if stored:
                model.store(fill.key, fill.value, fill.tags)
        else:
            who = step[1]
            assert isinstance(who, int)
            b = backends[who]
            clock.advance(0.001)
            if kind == "delete":
                key = _key(str(step[2]), str(step[3]))
                b.delete(key)
                model.void(lambda k, t, h, key=key: k == key)
                model.drop(lambda k, key=key: k == key)
            elif kind == "tags":
                tag = str(step[2])
                b.delete_tags([tag])
                members = model.members.pop(tag, set())
                # the tag's set names keys: every fill of a member key is voided (a
                # fill with the tag registered its key; one without it but of the same
                # key is voided too: the safe side)
                model.void(lambda k, t, h, members=members: k in members)
                model.drop(lambda k, members=members: k in members)
            elif kind == "prefix":
                head = f"{step[2]}:"
                b.delete_prefix(head)
                model.void(lambda k, t, h, head=head: head in h)
                model.drop(lambda k, head=head: k.startswith(head))
            elif kind == "clear":
                b.clear()
                model.void(lambda k, t, h: True)
                model.drop(lambda k: True)
                model.members.clear()
            else:  # a direct write: newer than any fill of the key in progress
                key = _key(str(step[2]), str(step[3]))
                writes += 1
                model.void(lambda k, t, h, key=key: k == key)
                b.set(key, -1, meta(), 60.0)
                model.store(key, -1, frozenset())
        # what every process reads agrees with the model
        for ns in NAMESPACES:
            for k in KEYS:
                key = _key(ns, k)
                entry = backends[1].get(key)
                got = None if entry is None else entry[0]
                assert got == model.stored.get(key), (key, ops)

"""The Redis cache's key layout is injective: distinct (namespace, kind, key or tag)
never share a Redis name, whatever characters they hold (the separators ``:``,
``!``, ``{``, ``}``, ``%`` included), so no namespace can reach another's values,
leases, fences or tag sets; and a name read back parses to what built it.
"""

from __future__ import annotations

import fakeredis
import fakeredis.aioredis
from hypothesis import given, settings
from hypothesis import strategies as st

from scalekit import RedisBackend
from scalekit.cache import Cache
from scalekit.cache._redis import RedisCacheBackend

_TEXT = st.text(alphabet="ab:!{}%t lvf*?[]\\\x00é\ud800", min_size=0, max_size=8)
_BACKENDS: dict[str, RedisCacheBackend] = {}


def _backend(namespace: str) -> RedisCacheBackend:
    b = _BACKENDS.get(namespace)
    if b is None:
        b = _BACKENDS[namespace] = RedisCacheBackend(
            RedisBackend("redis://fake", client=fakeredis.FakeRedis()), namespace=namespace
        )
    return b


def _names(namespace: str, key: str, tag: str) -> dict[str, tuple[str, str, str]]:
    b = _backend(namespace)
    fence, value, lease = b._key_names(key)
    return {
        fence: (namespace, "f", key),
        value: (namespace, "v", key),
        lease: (namespace, "l", key),
        b._tag_name(tag): (namespace, "t", tag),
    }


@settings(max_examples=500)
@given(
    st.lists(
        st.tuples(_TEXT.filter(bool), _TEXT, _TEXT.filter(bool)),
        min_size=1,
        max_size=6,
    )
)
def test_distinct_parts_never_share_a_name(parts: list[tuple[str, str, str]]) -> None:
    seen: dict[str, tuple[str, str, str]] = {}
    for namespace, key, tag in parts:
        for name, origin in _names(namespace, key, tag).items():
            assert seen.setdefault(name, origin) == origin, (name, origin, seen[name])
            # and the name belongs to its own namespace only
            for other, _, _ in parts:
                if other != namespace:
                    assert _backend(other)._parse(name.encode()) is None, (name, other)


@given(_TEXT.filter(bool), _TEXT)
def test_a_value_name_parses_back_to_its_key_names(namespace: str, key: str) -> None:
    b = _backend(namespace)
    fence, value, lease = b._key_names(key)
    for name in (fence, value, lease):
        assert b._triple_of(name.encode()) == (fence, value, lease)


def test_a_namespace_cannot_reach_another_namespaces_keys() -> None:
    """The issue's case: namespace ``tenant1!t`` (and ``tenant1:x``, ``tenant1{``)
    working hard next to ``tenant1`` leaves tenant1's entries, tags and fences alone."""
    server = fakeredis.FakeServer()

    def cache(namespace: str) -> Cache:
        backend = RedisBackend(
            "redis://fake",
            client=fakeredis.FakeRedis(server=server),
            async_client_factory=lambda: fakeredis.aioredis.FakeRedis(server=server),
        )
        return Cache(RedisCacheBackend(backend, namespace=namespace), name=namespace)

    tenant = cache("tenant1")
    tenant.set("t:users", "value", tags=["users"])
    tenant.set("users", "value2", tags=["t:users"])
    for namespace in ("tenant1!t", "tenant1!l", "tenant1!f", "tenant1:x", "tenant1{", "tenant"):
        other = cache(namespace)
        other.set("users", "other", tags=["users", "t:users"])
        other.set("t:users", "other", tags=["users"])
        assert other.get_or_load("k", lambda: 1, tags=["users"]) == 1
        assert other.invalidate_tags("users", "t:users") >= 2
        other.clear()
        assert tenant.get("t:users") == "value"
        assert tenant.get("users") == "value2"
    assert tenant.invalidate_tags("users") == 1
    assert tenant.get("t:users") is None
    assert tenant.get("users") == "value2"
    assert tenant.stats().decode_errors == 0

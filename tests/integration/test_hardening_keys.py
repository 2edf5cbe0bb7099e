"""Keys cannot escape their namespace, on the real Redis and Redis Cluster of the suite."""

from __future__ import annotations

import pytest

from scalekit.cache import Cache, RedisCacheBackend

pytestmark = pytest.mark.redis


def test_a_namespace_with_a_bang_cannot_overwrite_another_tenants_tags(
    fresh_redis_url: str,
) -> None:
    """``tenant1!t:x`` was both tenant1's tag set for tag ``x`` and the value key of
    ``x`` in namespace ``tenant1!t``."""
    victim = Cache(RedisCacheBackend(fresh_redis_url, namespace="tenant1"), name="v")
    attacker = Cache(RedisCacheBackend(fresh_redis_url, namespace="tenant1!t"), name="a")
    victim.set("profile", "v1", tags=("x",))
    attacker.set("x", "overwrite")  # must not touch tenant1's tag set for "x"
    assert victim.invalidate_tags("x") == 1
    assert victim.get("profile", "miss") == "miss"  # no stale entry left behind
    assert attacker.get("x") == "overwrite"

"""The cache's durations go through the one validation module: bounds every backend can
store, NaN and bools refused (issue 11: ``lease_ttl=1e16`` was accepted, then refused by
Redis inside the script, where it silently disabled the lease)."""

from __future__ import annotations

import math

import pytest

from scalekit.cache import Cache, CacheOptions, RedisCacheBackend
from scalekit.errors import ConfigurationError


@pytest.mark.parametrize("bad", [1e16, math.nan, math.inf, -1.0, True, "10"])
def test_cache_options_durations(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="ttl"):
        CacheOptions(ttl=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["lease_ttl", "fence_ttl"])
@pytest.mark.parametrize("bad", [1e16, math.nan, 0, True])
def test_redis_cache_backend_durations(redis_url: str, name: str, bad: object) -> None:
    with pytest.raises(ConfigurationError, match=name):
        RedisCacheBackend(redis_url, **{name: bad})  # type: ignore[arg-type]


def test_backend_cooldown_refuses_bools() -> None:
    with pytest.raises(ConfigurationError, match="backend_cooldown"):
        Cache(backend_cooldown=True)  # type: ignore[arg-type]

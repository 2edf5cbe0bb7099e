"""The limiters' metrics: ``stats()`` is a frozen dataclass read from the limiter's own
counters in the metrics registry; the registry exports them by limiter, algorithm
and tier (never a key)."""

from __future__ import annotations

import dataclasses
import socket

import pytest

from scalekit import RedisBackend
from scalekit.observability import default_registry
from scalekit.ratelimit import (
    ALGORITHMS,
    ConcurrencyLimiter,
    ConcurrencyStats,
    RateLimiter,
    RateLimiterStats,
)
from scalekit.testing import FakeClock


def closed_backend() -> RedisBackend:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return RedisBackend(f"redis://127.0.0.1:{port}/0", connect_timeout=0.5, socket_timeout=0.5)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_stats_count_every_path(algorithm: str) -> None:
    clock = FakeClock()
    a = RateLimiter("memory://", "3/minute", algorithm=algorithm, name="same", clock=clock)  # type: ignore[arg-type]
    b = RateLimiter("memory://", "3/minute", algorithm=algorithm, name="same", clock=clock)  # type: ignore[arg-type]
    for _ in range(5):
        a.hit("k")  # the fast path where there is one
    a.peek("k")
    a.hit("k", tier=None)
    a.refund("k")
    a.refund("k", 2)
    st = a.stats()
    assert isinstance(st, RateLimiterStats)
    assert (st.allowed, st.denied, st.refunds) == (3, 4, 2)
    assert b.stats() == RateLimiterStats(0, 0, 0, 0, 0, 0, 0, 0)  # its own counts
    with pytest.raises(dataclasses.FrozenInstanceError):
        st.allowed = 0  # type: ignore[misc]


def test_mapping_access_still_works() -> None:
    lim = RateLimiter("memory://", "1/minute")
    lim.hit("k")
    lim.hit("k")
    st = lim.stats()
    assert (st["allowed"], st["denied"]) == (1, 1)
    assert dict(st.as_dict()) == {**st} and set(st.keys()) >= {"allowed", "corrupt_keys"}
    with pytest.raises(KeyError):
        st["nope"]


def test_a_full_store_and_a_down_backend_are_counted() -> None:
    full = RateLimiter("memory://?max_keys=1", "5/minute", algorithm="gcra")
    assert full.hit("a").allowed and full.hit("b").allowed  # fail_open for the refused key
    assert (full.stats().refused_full, full.stats().degraded) == (1, 1)

    down = RateLimiter(closed_backend(), {"free": "1/minute"}, on_backend_error="fail_closed")
    assert not down.hit("k", tier="free").allowed  # the call fails: an episode begins
    assert not down.hit("k", tier="free").allowed  # cooling down: no call
    down.refund("k", tier="free")  # cooling down: no call
    st = down.stats()
    assert (st.backend_errors, st.backend_episodes, st.degraded, st.refunds) == (1, 1, 2, 0)


async def test_the_async_limiters_count_too() -> None:
    lim = RateLimiter("memory://", "1/minute")
    await lim.ahit("k")
    await lim.ahit("k")
    await lim.arefund("k")
    assert (lim.stats().allowed, lim.stats().denied, lim.stats().refunds) == (1, 1, 1)

    cc = ConcurrencyLimiter("memory://", 1, name="uploads")
    lease = await cc.atry_acquire("k")
    assert lease is not None and await cc.atry_acquire("k") is None
    await cc.arelease(lease)
    assert cc.stats() == ConcurrencyStats(acquired=1, rejected=1, degraded=0, backend_errors=0,
                                          corrupt_keys=0)  # fmt: skip


def test_concurrency_limiter_stats() -> None:
    cc = ConcurrencyLimiter("memory://", 1)
    with cc.hold("k"), pytest.raises(Exception, match="slots"):
        cc.acquire("k", timeout=0)
    down = ConcurrencyLimiter(closed_backend(), 1, on_backend_error="fail_open")
    assert down.try_acquire("k") is not None
    assert (cc.stats()["acquired"], cc.stats()["rejected"]) == (1, 1)
    assert (down.stats().backend_errors, down.stats().degraded, down.stats().acquired) == (1, 1, 1)


def series(name: str) -> dict[tuple[tuple[str, str], ...], float]:
    [metric] = [m for m in default_registry.collect() if m.name == name]
    return {tuple(sorted(s.labels.items())): s.value for s in metric.samples}


def test_exported_by_limiter_algorithm_and_tier_never_a_key() -> None:
    a = RateLimiter("memory://", {"free": "1/minute", "paid": "5/minute"}, name="export-a")
    b = RateLimiter("memory://", {"free": "1/minute", "paid": "5/minute"}, name="export-a")
    for lim in (a, b):
        lim.hit("user:secret", tier="free")
        lim.hit("user:secret", tier="free")
        lim.hit("user:secret", tier="paid")
    allowed = series("scalekit_ratelimit_allowed_total")
    denied = series("scalekit_ratelimit_denied_total")
    free = (("algorithm", "sliding_window"), ("limiter", "export-a"), ("tier", "free"))
    paid = (("algorithm", "sliding_window"), ("limiter", "export-a"), ("tier", "paid"))
    assert (allowed[free], allowed[paid], denied[free]) == (2, 2, 2)  # both limiters summed
    assert a.stats().allowed == 2  # each its own
    assert not any("user:secret" in str(k) for k in allowed)
    cc = ConcurrencyLimiter("memory://", 1, name="export-cc")
    cc.try_acquire("k")
    assert series("scalekit_concurrency_acquired_total")[(("limiter", "export-cc"),)] == 1

"""The concurrency-limit contract: memory, fakeredis, real Redis x sync, async."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from conftest import call
from twins import in_mode

from scalekit import ConcurrencyLimitExceeded, ConfigurationError
from scalekit.ratelimit import ConcurrencyLimiter
from scalekit.testing import FakeClock

_prefixes = itertools.count()


@pytest.fixture
def make_cc(backend: Any, mode: str, clock: FakeClock) -> Any:
    def factory(limit: int, **options: Any) -> Any:
        options.setdefault("clock", clock)
        options.setdefault("prefix", f"cc{next(_prefixes)}")  # the cluster is not flushed
        return in_mode(ConcurrencyLimiter(backend, limit, **options), mode)

    return factory


async def test_at_most_limit_leases(make_cc: Any) -> None:
    cc = make_cc(2)
    a = await call(cc.try_acquire("k"))
    b = await call(cc.try_acquire("k"))
    assert a is not None and b is not None and a.id != b.id
    assert await call(cc.try_acquire("k")) is None
    assert await call(cc.in_flight("k")) == 2
    assert await call(cc.try_acquire("other")) is not None, "keys must not share slots"
    assert await call(cc.release(a)) is True
    assert await call(cc.release(a)) is False, "double release must report it"
    assert await call(cc.in_flight("k")) == 1
    assert await call(cc.try_acquire("k")) is not None


async def test_expired_lease_frees_its_slot(make_cc: Any, clock: FakeClock) -> None:
    cc = make_cc(1, lease_ttl=10.0)
    crashed = await call(cc.try_acquire("k"))  # never released: its holder "crashed"
    assert crashed is not None
    clock.advance(9.9)
    assert await call(cc.try_acquire("k")) is None
    clock.advance(0.2)
    assert await call(cc.try_acquire("k")) is not None
    assert await call(cc.renew(crashed)) is False


async def test_renew_keeps_a_long_call_alive(make_cc: Any, clock: FakeClock) -> None:
    cc = make_cc(1, lease_ttl=10.0)
    lease = await call(cc.try_acquire("k"))
    for _ in range(3):
        clock.advance(8)
        assert await call(cc.renew(lease)) is True
    assert await call(cc.try_acquire("k")) is None


async def test_acquire_waits_for_expiry_or_times_out(make_cc: Any, clock: FakeClock) -> None:
    cc = make_cc(1, lease_ttl=1.0)
    await call(cc.acquire("k"))
    with pytest.raises(ConcurrencyLimitExceeded) as info:
        await call(cc.acquire("k", timeout=0.2))
    assert 0 < info.value.retry_after <= 1.0
    lease = await call(cc.acquire("k", timeout=5.0))  # the first lease expires meanwhile
    assert lease.key == "k"
    assert 0.8 <= sum(clock.sleeps) <= 5.0


async def test_hold_releases_on_exit_and_on_error(make_cc: Any, mode: str) -> None:
    cc = make_cc(1)
    if mode == "async":
        async with cc.hold("k"):
            assert await cc.in_flight("k") == 1
        with pytest.raises(RuntimeError):
            async with cc.hold("k"):
                raise RuntimeError("boom")
    else:
        with cc.hold("k"):
            assert cc.in_flight("k") == 1
        with pytest.raises(RuntimeError), cc.hold("k"):
            raise RuntimeError("boom")
    assert await call(cc.in_flight("k")) == 0


async def test_bad_arguments(make_cc: Any) -> None:
    for limit in (0, -1, 1.5, True):
        with pytest.raises(ConfigurationError):
            make_cc(limit)
    with pytest.raises(ConfigurationError):
        make_cc(1, lease_ttl=0)
    cc = make_cc(1)
    with pytest.raises(ConfigurationError):
        await call(cc.try_acquire(""))

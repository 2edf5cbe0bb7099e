"""What a limiter does when its backend is down, and when a memory store is full.

The backend here is a Redis URL on a loopback port where nothing listens, so every
call fails fast with "connection refused"; tests/integration/test_ratelimit_faults.py
stops a real server mid-run and checks recovery.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import pytest
from twins import AsyncTwins, in_mode

from scalekit import MemoryBackend, RateLimiter
from scalekit.ratelimit import ConcurrencyLimiter
from scalekit.testing import FakeClock


@pytest.fixture
def dead_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return f"redis://127.0.0.1:{port}/0"


@pytest.fixture(params=["sync", "async"])
def limiter_cls(request: pytest.FixtureRequest) -> Any:
    """A RateLimiter factory: seen through its async twins (``hit`` is ``ahit``) in
    async mode."""
    mode = str(request.param)
    return lambda *args, **kwargs: in_mode(RateLimiter(*args, **kwargs), mode)


async def _hit(limiter: Any, key: str = "k") -> Any:
    d = limiter.hit(key)
    return await d if isinstance(limiter, AsyncTwins) else d


async def test_fail_open_allows_and_cools_down(dead_url: str, limiter_cls: Any) -> None:
    clock = FakeClock()
    lim = limiter_cls(dead_url, "1/minute", on_backend_error="fail_open", clock=clock)
    assert all([(await _hit(lim)).allowed for _ in range(5)])
    s = lim.stats()
    assert s["backend_errors"] == 1, "calls during the cooldown must not touch the backend"
    assert s["backend_episodes"] == 1
    assert s["degraded"] == 5
    clock.advance(5.0)  # cooldown over: the next call probes once
    await _hit(lim)
    await _hit(lim)
    assert lim.stats()["backend_errors"] == 2
    assert lim.stats()["backend_episodes"] == 1, "still the same outage episode"


async def test_fail_closed_denies_until_the_next_probe(dead_url: str, limiter_cls: Any) -> None:
    clock = FakeClock()
    lim = limiter_cls(
        dead_url, "100/minute", on_backend_error="fail_closed", backend_cooldown=2.0, clock=clock
    )
    d = await _hit(lim)
    assert not d.allowed
    assert d.retry_after == pytest.approx(2.0)
    clock.advance(0.5)
    assert (await _hit(lim)).retry_after == pytest.approx(1.5)


async def test_local_fallback_divides_the_limit(dead_url: str, limiter_cls: Any) -> None:
    lim = limiter_cls(
        dead_url,
        "8/minute; 100/day",
        on_backend_error="local_fallback",
        fallback_instances=4,
        clock=FakeClock(),
    )
    got = [(await _hit(lim)).allowed for _ in range(3)]
    assert got == [True, True, False]
    assert [(await _hit(lim, "other")).allowed for _ in range(3)] == [True, True, False]


async def test_each_episode_is_logged_once(
    dead_url: str, limiter_cls: Any, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    lim = limiter_cls(dead_url, "1/minute", clock=clock, name="chat")
    with caplog.at_level(logging.WARNING, logger="scalekit.ratelimit"):
        for _ in range(4):
            await _hit(lim)
            clock.advance(10)  # past the cooldown: every call probes and fails again
    # the primitive's own log (the structured backend.down event goes to scalekit.events)
    messages = [r.getMessage() for r in caplog.records if r.name == "scalekit.ratelimit"]
    assert len(messages) == 1, messages
    events = [getattr(r, "event", None) for r in caplog.records if r.name == "scalekit.events"]
    assert events == ["backend.down"]
    assert "'chat'" in messages[0] and "backend failed" in messages[0]
    assert lim.stats()["backend_errors"] == 4


def test_secrets_never_reach_messages(caplog: pytest.LogCaptureFixture) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    lim = RateLimiter(f"redis://:hunter2@127.0.0.1:{port}/0", "1/minute", clock=FakeClock())
    with caplog.at_level(logging.DEBUG):
        lim.hit("k")
    assert "hunter2" not in caplog.text
    assert "hunter2" not in repr(lim)


@pytest.mark.parametrize("policy", ["fail_open", "fail_closed"])
def test_concurrency_limiter_failure_policy(dead_url: str, policy: str) -> None:
    cc = ConcurrencyLimiter(dead_url, 1, on_backend_error=policy, clock=FakeClock())  # type: ignore[arg-type]
    lease = cc.try_acquire("k")
    assert (lease is not None) == (policy == "fail_open")


async def test_async_concurrency_local_fallback(dead_url: str) -> None:
    cc = ConcurrencyLimiter(dead_url, 1, on_backend_error="local_fallback", clock=FakeClock())
    assert await cc.atry_acquire("k") is not None
    assert await cc.atry_acquire("k") is None


@pytest.mark.parametrize("algorithm", ["fixed_window", "sliding_window", "sliding_log", "gcra"])
def test_full_memory_store_never_hands_out_a_live_keys_quota(algorithm: str) -> None:
    clock = FakeClock()
    closed = RateLimiter(
        MemoryBackend(max_keys=2),
        "2/minute",
        algorithm=algorithm,  # type: ignore[arg-type]
        on_backend_error="fail_closed",
        clock=clock,
    )
    assert closed.hit("a").allowed and closed.hit("b").allowed
    refused = closed.hit("c")
    assert not refused.allowed and refused.retry_after > 0
    assert closed.stats()["refused_full"] == 1
    # live keys keep their state: "a" has one unit left, then none
    assert closed.hit("a").allowed
    assert not closed.hit("a").allowed
    clock.advance(600)  # every window over: idle keys are dropped, "c" gets in
    assert closed.hit("c").allowed

    opened = RateLimiter("memory://?max_keys=1", "1/minute", algorithm=algorithm, clock=clock)  # type: ignore[arg-type]
    assert opened.hit("a").allowed
    assert opened.hit("b").allowed, "fail_open lets a new key through untracked"
    assert opened.hit("b").allowed
    assert not opened.hit("a").allowed, "the tracked key keeps its quota"
    assert opened.stats()["refused_full"] == 2

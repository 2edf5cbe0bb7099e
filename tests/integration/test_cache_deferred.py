"""``on_invalidation_error="defer"`` on the real Redis: a private server SIGSTOPped
(or stopped), the invalidations queued in memory and applied, in order, when it
answers again; the queue's bound; ``"raise"`` unchanged; the async twins."""

from __future__ import annotations

import logging
import os
import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from scalekit.cache import Cache, ainvalidate, cached, invalidate
from scalekit.cache._redis import RedisCacheBackend
from scalekit.errors import BackendError, ConfigurationError


def _cache(server: Any, ns: str, **kwargs: Any) -> Cache:
    return Cache(
        RedisCacheBackend(server.url, namespace=ns), name=f"d-{ns}", backend_cooldown=0.05,
        **kwargs,
    )  # fmt: skip


@contextmanager
def _paused(server: Any) -> Iterator[None]:
    pid = server.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def test_deferred_invalidations_are_applied_when_redis_returns(
    redis_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ns = uuid.uuid4().hex[:8]
    c = _cache(redis_server, ns, on_invalidation_error="defer")
    observer = _cache(redis_server, ns)  # another process' view (raise policy)
    calls = 0

    @cached(ttl=600, cache=c, namespace="q")
    def query(x: int) -> int:
        nonlocal calls
        calls += 1
        return x * 2

    c.set("a", 1, tags=["t"])
    c.set("b", 2)
    c.set("keep", 3)
    assert query(1) == 2 and calls == 1
    with caplog.at_level(logging.WARNING, logger="scalekit.cache"), _paused(redis_server):
        assert c.delete("b") is False  # queued: nothing raised
        assert c.invalidate_tags("t") == 0
        assert invalidate(query, 1) is False
        assert c.pending_invalidations == 3
        # reads skip the backend while invalidations wait: nothing covered is served
        assert query(1) == 2 and calls == 2
        assert c.get("a") is None
    assert c.drain_invalidations(10.0)
    assert c.pending_invalidations == 0
    for key in ("a", "b"):
        assert observer.get(key) is None
    assert observer.get("keep") == 3
    assert query(1) == 2 and calls == 3  # its entry was dropped too
    assert query(1) == 2 and calls == 3  # and Redis is used again
    st = c.stats()
    assert st.invalidations_deferred == 3
    queued = [r for r in caplog.records if "invalidations are queued" in r.getMessage()]
    assert len(queued) == 1  # once per outage, not per call
    assert any("deferred invalidations applied" in r.getMessage() for r in caplog.records)


def test_the_bound_collapses_the_queue_into_one_clear(redis_server: Any) -> None:
    ns = uuid.uuid4().hex[:8]
    c = _cache(redis_server, ns, on_invalidation_error="defer", max_deferred=2)
    observer = _cache(redis_server, ns)
    for k in ("k1", "k2", "k3", "untouched"):
        c.set(k, k)
    other = _cache(redis_server, uuid.uuid4().hex[:8])
    other.set("k1", "other namespace")
    with _paused(redis_server):
        for k in ("k1", "k2"):
            c.delete(k)
        assert c.pending_invalidations == 2
        c.delete("k3")  # past the bound: the queue becomes one clear of this cache
        assert c.pending_invalidations == 1
        c.delete("k4")  # covered by the queued clear
        assert c.pending_invalidations == 1
    assert c.drain_invalidations(10.0)
    for k in ("k1", "k2", "k3", "untouched"):
        assert observer.get(k) is None
    assert other.get("k1") == "other namespace"  # another cache is not cleared
    assert c.stats().invalidations_deferred == 4


def test_stopped_server_the_queue_waits_for_the_restart(redis_server: Any) -> None:
    ns = uuid.uuid4().hex[:8]
    c = _cache(redis_server, ns, on_invalidation_error="defer")
    c.set("a", 1)
    redis_server.stop(kill=True)
    try:
        assert c.delete("a") is False
        c.invalidate_namespace("q")
        assert c.pending_invalidations == 2
        assert not c.drain_invalidations(0.3)  # nothing to apply it to yet
    finally:
        redis_server.restart()
    assert c.drain_invalidations(10.0)
    assert c.stats().invalidations == 2


def test_raise_is_the_default(redis_server: Any) -> None:
    c = _cache(redis_server, uuid.uuid4().hex[:8])
    redis_server.stop(kill=True)
    try:
        with pytest.raises(BackendError):
            c.delete("a")
        assert c.pending_invalidations == 0
    finally:
        redis_server.restart()


async def test_async_twins_defer_too(redis_server: Any) -> None:
    ns = uuid.uuid4().hex[:8]
    c = _cache(redis_server, ns, on_invalidation_error="defer")
    observer = _cache(redis_server, ns)

    @cached(ttl=600, cache=c, namespace="aq")
    async def query(x: int) -> int:
        return x

    assert await query(5) == 5
    await c.aset("a", 1, tags=["t"])
    await c.aset("b", 2)
    with _paused(redis_server):
        assert await c.adelete("b") is False
        assert await c.ainvalidate_tags("t") == 0
        assert await ainvalidate(query, 5) is False
        assert await c.ainvalidate_namespace("aq") == 0
        assert c.pending_invalidations == 4
    assert c.drain_invalidations(10.0)
    assert observer.get("a") is None and observer.get("b") is None
    assert await ainvalidate(query, 5) is False  # already gone, applied for real


def test_policy_is_validated() -> None:
    with pytest.raises(ConfigurationError, match="on_invalidation_error"):
        Cache(on_invalidation_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="max_deferred"):
        Cache(max_deferred=0)

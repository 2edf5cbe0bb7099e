"""The cache's startup check (``Cache.ping`` / ``aping``) on the real Redis and a
closed port, and its backend errors counted into the registry."""

from __future__ import annotations

import uuid

import pytest

from scalekit.cache import Cache
from scalekit.errors import BackendError
from scalekit.observability import default_registry
from tests.servers import free_port


def _closed_url(scheme: str = "redis") -> str:
    return f"{scheme}://:hunter2@127.0.0.1:{free_port()}/0"


@pytest.mark.parametrize("scheme", ["redis", "tiered+redis"])
def test_ping_on_a_closed_port_names_the_redacted_url(scheme: str) -> None:
    c = Cache(_closed_url(scheme), name="boot")
    with pytest.raises(BackendError, match=r"cache 'boot': Redis at .*127\.0\.0\.1") as info:
        c.ping()
    assert "hunter2" not in str(info.value) and "***" in str(info.value)


@pytest.mark.parametrize("scheme", ["redis", "tiered+redis"])
async def test_aping_on_a_closed_port_names_the_redacted_url(scheme: str) -> None:
    c = Cache(_closed_url(scheme), name="boot")
    with pytest.raises(BackendError, match=r"cache 'boot': Redis at .*127\.0\.0\.1") as info:
        await c.aping()
    assert "hunter2" not in str(info.value)


def test_ping_bypasses_the_cooldown_a_failed_read_started() -> None:
    c = Cache(_closed_url(), name="boot", backend_cooldown=3600)
    assert c.get_or_load("k", lambda: 1) == 1  # the backend fails: loaded, not cached
    with pytest.raises(BackendError):
        c.ping()  # not hidden by the guard's cooldown


async def test_ping_answers_on_the_real_redis(fresh_redis_url: str) -> None:
    c = Cache(fresh_redis_url, name="boot")
    c.ping()
    await c.aping()
    Cache("memory://").ping()  # nothing to check


def test_backend_errors_are_counted_into_the_registry() -> None:
    name = f"down-{uuid.uuid4().hex[:8]}"
    c = Cache(_closed_url(), name=name, backend_cooldown=3600)
    assert c.get_or_load("k", lambda: 1) == 1
    assert c.get_or_load("k", lambda: 2) == 2  # cooling down: skipped, not another error
    st = c.stats()
    assert (st.backend_errors, st.loads) == (1, 2)
    [metric] = [
        m
        for m in default_registry.collect()
        if m.name.endswith("backend_errors_total") and m.name.startswith("scalekit_cache")
    ]
    # a backend error is the cache's, not a call's: under the direct namespace "-"
    assert [s.value for s in metric.samples if s.labels["cache"] == name] == [1]
    assert [s.labels for s in metric.samples if s.labels["cache"] == name] == [
        {"cache": name, "namespace": "-"}
    ]

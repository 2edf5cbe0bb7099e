"""The one sync/async convention and the one accessor (issue 16), and the older shapes
they replace, kept for one release: each still works and warns, naming its
replacement, from the caller's line."""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from httpx import ASGITransport, AsyncClient

from scalekit import ConfigurationError, RateLimitExceeded, primitive_of, rate_limited
from scalekit.cache import Cache, cache_of, cached
from scalekit.config import Settings
from scalekit.ratelimit import (
    AsyncConcurrencyLimiter,
    AsyncRateLimiter,
    ConcurrencyLimiter,
    RateLimiter,
    RateLimitMiddleware,
)
from scalekit.ratelimit.fastapi import limit
from scalekit.resilience import (
    Bulkhead,
    CircuitBreaker,
    RetryBudget,
    bulkhead,
    circuit_breaker,
    retry,
)
from scalekit.sampling import Cap, Fixed, Pipeline, sampled
from scalekit.testing import FakeClock


def _one_warning_here(record: pytest.WarningsRecorder, *words: str) -> None:
    """Exactly one DeprecationWarning, attributed to this file, naming ``words``."""
    deprecations = [w for w in record if issubclass(w.category, DeprecationWarning)]
    assert len(deprecations) == 1, [str(w.message) for w in deprecations]
    w = deprecations[0]
    assert w.filename == __file__, w.filename  # the caller's line, not scalekit's
    for word in words:
        assert word in str(w.message), (word, str(w.message))


# -- the convention: one object, a-prefixed twins ------------------------------------


async def test_one_rate_limiter_serves_sync_and_async_callers() -> None:
    clock = FakeClock()
    for backend in ("memory://", "memory://?max_keys=10"):
        lim = RateLimiter(backend, "3/minute", clock=clock)
        assert lim.hit("k").allowed
        assert (await lim.ahit("k")).remaining == 1
        assert (await lim.apeek("k")).remaining == 1
        assert lim.peek("k").remaining == 1
        await lim.arefund("k")
        assert lim.hit("k").remaining == 1
        assert (await lim.aacquire("k", timeout=0)).remaining == 0
        with pytest.raises(RateLimitExceeded):
            await lim.aacquire("k", timeout=0)
        await lim.areset("k")
        assert lim.hit("k").remaining == 2
        await lim.aping()  # memory: nothing to check
        assert lim.stats().allowed == 7 and lim.stats().refunds == 1


async def test_async_acquire_waits_on_the_limiters_clock() -> None:
    clock = FakeClock()
    lim = RateLimiter("memory://", "1/minute", algorithm="fixed_window", clock=clock)
    assert (await lim.ahit("k")).allowed
    start = clock.now()
    assert (await lim.aacquire("k", timeout=None)).allowed
    assert clock.now() - start == pytest.approx(60.0 - (start % 60.0), abs=1e-6)


async def test_one_concurrency_limiter_serves_sync_and_async_holders() -> None:
    cc = ConcurrencyLimiter("memory://", 2, clock=FakeClock())
    with cc.hold("k"):
        async with cc.ahold("k") as lease:
            assert cc.in_flight("k") == 2 and await cc.ain_flight("k") == 2
            assert await cc.atry_acquire("k") is None  # the sync holder counts too
            assert await cc.arenew(lease)
    assert await cc.ain_flight("k") == 0
    got = await cc.aacquire("k", timeout=0)
    assert await cc.arelease(got) and not await cc.arelease(got)  # a double release
    await cc.aping()


# -- the deprecated classes ----------------------------------------------------------


async def test_async_rate_limiter_warns_and_still_works() -> None:
    with pytest.warns(DeprecationWarning, match="AsyncRateLimiter") as record:
        lim = AsyncRateLimiter("memory://", "2/minute", clock=FakeClock())
    _one_warning_here(record, "AsyncRateLimiter", "RateLimiter", "ahit")
    assert isinstance(lim, RateLimiter)
    assert (await lim.hit("k")).remaining == 1  # the old shape: awaitable under sync names
    assert (await lim.peek("k")).remaining == 1
    await lim.refund("k")
    assert (await lim.acquire("k", timeout=0)).allowed
    await lim.reset("k")
    await lim.ping()
    assert (await lim.ahit("k")).remaining == 1  # and the new names on it too


async def test_async_concurrency_limiter_warns_and_still_works() -> None:
    with pytest.warns(DeprecationWarning, match="AsyncConcurrencyLimiter") as record:
        cc = AsyncConcurrencyLimiter("memory://", 1)
    _one_warning_here(record, "AsyncConcurrencyLimiter", "ConcurrencyLimiter", "ahold")
    async with cc.hold("k") as lease:
        assert await cc.try_acquire("k") is None
        assert await cc.in_flight("k") == 1
        assert await cc.renew(lease)
    lease = await cc.acquire("k")
    assert await cc.release(lease)
    await cc.ping()


async def test_the_deprecated_async_limiter_in_the_decorator_middleware_and_cap() -> None:
    with pytest.warns(DeprecationWarning, match="AsyncRateLimiter"):
        lim = AsyncRateLimiter("memory://", "1/minute")

    @rate_limited(lim, key="k")
    async def f() -> int:
        return 1

    assert await f() == 1
    with pytest.raises(RateLimitExceeded):
        await f()
    with pytest.raises(ConfigurationError, match="needs a RateLimiter"):

        @rate_limited(lim, key="k")
        def g() -> None: ...

    with pytest.warns(DeprecationWarning, match="AsyncRateLimiter"):
        cap_lim = AsyncRateLimiter("memory://", "1/minute")
    cap: Cap[str] = Cap(cap_lim, key=lambda item: item)
    assert (await cap.adecide("a"))[0] and not (await cap.adecide("a"))[0]
    with pytest.raises(ConfigurationError, match="adecide"):
        cap.decide("a")

    with pytest.warns(DeprecationWarning, match="AsyncRateLimiter"):
        mw_lim = AsyncRateLimiter("memory://", "1/minute")
    statuses = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    mw = RateLimitMiddleware(app, mw_lim, key=lambda scope: "k")
    for _ in range(2):
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any], sent: list[dict[str, Any]] = sent) -> None:
            sent.append(message)

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        await mw({"type": "http", "path": "/", "headers": []}, receive, send)
        statuses.append(sent[0]["status"])
    assert statuses == [200, 429]


async def test_the_deprecated_async_limiter_in_a_fastapi_dependency() -> None:
    with pytest.warns(DeprecationWarning, match="AsyncRateLimiter"):
        lim = AsyncRateLimiter("memory://", "1/minute")
    app = FastAPI()

    @app.get("/", dependencies=[Depends(limit(lim, key="k"))])
    async def root() -> str:
        return "ok"

    transport = ASGITransport(app=app, raise_app_exceptions=False)
    async with AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/")).status_code == 200
        assert (await client.get("/")).status_code == 500  # no handler installed: raised


def test_settings_async_rate_limiter_warns_once_and_names_rate_limiter() -> None:
    settings = Settings(redis_url="memory://")
    with pytest.warns(DeprecationWarning, match="async_rate_limiter") as record:
        lim = settings.async_rate_limiter("chat", "2/minute")
    _one_warning_here(record, "async_rate_limiter", "rate_limiter()")
    assert isinstance(lim, AsyncRateLimiter)
    assert asyncio.run(lim.hit("k")).remaining == 1
    assert settings.rate_limiter("chat", "2/minute").hit("k").allowed  # the replacement


# -- one accessor: primitive_of --------------------------------------------------------


async def test_primitive_of_every_decorator_sync_and_async() -> None:
    breaker = CircuitBreaker("conv-acc", record=ValueError)
    head = Bulkhead("conv-acc", max_concurrent=2)
    budget = RetryBudget()
    pipe: Pipeline[Any] = Pipeline(Fixed(1.0, name="all"), name="conv-acc")
    cache = Cache("memory://", name="conv-acc")
    lim = RateLimiter("memory://", "10/minute")

    def sync_fn(x: int) -> int:
        return x

    async def async_fn(x: int) -> int:
        return x

    for fn in (sync_fn, async_fn):
        decorated: list[tuple[Any, type, object]] = [
            (rate_limited(lim, key="k")(fn), RateLimiter, lim),
            (breaker(fn), CircuitBreaker, breaker),
            (head(fn), Bulkhead, head),
            (retry(on=ValueError, budget=budget)(fn), RetryBudget, budget),
            (sampled(pipe)(fn), Pipeline, pipe),
            (cached(ttl=60, cache=cache)(fn), Cache, cache),
        ]
        for wrapper, kind, expected in decorated:
            assert primitive_of(wrapper, kind) is expected, (fn, kind)
    built = circuit_breaker("conv-built", record=ValueError)(sync_fn)
    assert primitive_of(built, CircuitBreaker).name == "conv-built"
    assert primitive_of(bulkhead(max_concurrent=1)(sync_fn), Bulkhead).stats().admitted == 0


def test_primitive_of_stacked_decorators_in_any_order_and_bound_methods() -> None:
    cache = Cache("memory://", name="conv-stack")
    breaker = CircuitBreaker("conv-stack", record=ValueError)

    @rate_limited("5/minute", key="k")
    @breaker
    @cached(ttl=60, cache=cache)
    def f(x: int) -> int:
        return x

    @cached(ttl=60, cache=cache)
    @rate_limited("5/minute", key="k")
    def g(x: int) -> int:
        return x

    assert f(1) == 1 and g(1) == 1
    assert primitive_of(f, Cache) is cache and primitive_of(f, CircuitBreaker) is breaker
    assert primitive_of(f, RateLimiter).stats().allowed == 1
    assert primitive_of(g, Cache) is cache and primitive_of(g, RateLimiter).stats().allowed == 1
    assert primitive_of(g, RateLimiter) is not primitive_of(f, RateLimiter)

    class Repo:
        @cached(ttl=60, cache=cache)
        def get(self, x: int) -> int:
            return x

    assert primitive_of(Repo().get, Cache) is cache


def test_primitive_of_refuses_what_is_not_there() -> None:
    def plain() -> None: ...

    with pytest.raises(ConfigurationError, match="has no RateLimiter"):
        primitive_of(plain, RateLimiter)
    limited = rate_limited("1/minute", key="k")(plain)
    with pytest.raises(ConfigurationError, match="has no Cache"):
        primitive_of(limited, Cache)
    with pytest.raises(ConfigurationError, match="kind must be a class"):
        primitive_of(limited, "RateLimiter")  # type: ignore[arg-type]
    cyclic: Any = lambda: None  # noqa: E731
    cyclic.__wrapped__ = cyclic  # a loop of __wrapped__ ends, it does not hang
    with pytest.raises(ConfigurationError):
        primitive_of(cyclic, RateLimiter)


def test_breaker_call_leaves_no_record_behind() -> None:
    breaker = CircuitBreaker("conv-call", record=ValueError)

    def f() -> int:
        return 1

    assert breaker.call(f) == 1
    with pytest.raises(ConfigurationError):
        primitive_of(f, CircuitBreaker)  # call() decorated nothing


# -- the deprecated accessors ------------------------------------------------------------


def test_old_attributes_warn_on_use_and_still_answer() -> None:
    breaker = CircuitBreaker("conv-attr", record=ValueError)
    head = Bulkhead("conv-attr", max_concurrent=1)
    budget = RetryBudget()
    pipe: Pipeline[Any] = Pipeline(Fixed(1.0, name="all"), name="conv-attr")

    def fn(x: int) -> int:
        return x

    limited: Any = rate_limited("3/minute", key="k")(fn)
    broken: Any = breaker(fn)
    headed: Any = head(fn)
    retried: Any = retry(on=ValueError, budget=budget)(fn)
    sampled_fn: Any = sampled(pipe)(fn)

    assert limited(1) == 1
    with pytest.warns(DeprecationWarning, match="fn.limiter") as record:
        allowed = limited.limiter.stats().allowed
    _one_warning_here(record, "fn.limiter", "primitive_of(fn, RateLimiter)")
    assert allowed == 1
    with pytest.warns(DeprecationWarning, match="fn.breaker") as record:
        name = broken.breaker.name
    _one_warning_here(record, "fn.breaker", "primitive_of(fn, CircuitBreaker)")
    assert name == "conv-attr"
    with pytest.warns(DeprecationWarning, match="fn.bulkhead") as record, headed.bulkhead:
        assert head.stats().running == 1
    assert head.stats().running == 0
    assert all("primitive_of(fn, Bulkhead)" in str(w.message) for w in record)
    with pytest.warns(DeprecationWarning, match=r"primitive_of\(fn, RetryBudget\)"):
        assert retried.budget.stats() == budget.stats()
    with pytest.warns(DeprecationWarning, match=r"primitive_of\(fn, Pipeline\)"):
        assert sampled_fn.pipeline.name == "conv-attr"
    with pytest.warns(DeprecationWarning, match="fn.breaker"):
        again = broken.breaker(lambda: 2)  # still decorates
    assert again() == 2
    # reading the attribute itself, isinstance and functools.wraps copying it: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        proxy = broken.breaker
        assert isinstance(proxy, CircuitBreaker)
        assert isinstance(limited.limiter, RateLimiter)


def test_cache_of_warns_and_names_primitive_of() -> None:
    cache = Cache("memory://", name="conv-cache-of")

    @cached(ttl=60, cache=cache)
    def f(x: int) -> int:
        return x

    with pytest.warns(DeprecationWarning, match="cache_of") as record:
        got = cache_of(f)
    _one_warning_here(record, "cache_of", "primitive_of(fn, Cache)")
    assert got is cache is primitive_of(f, Cache)


async def test_one_cap_limiter_and_its_old_attributes() -> None:
    cap: Cap[str] = Cap("2/minute", key=lambda item: item)
    assert cap.decide("a")[0] and (await cap.adecide("a"))[0]  # one limiter, one window
    assert not cap.decide("a")[0]
    assert cap.limiter.stats().allowed == 2
    with pytest.warns(DeprecationWarning, match=r"Cap\.sync is deprecated; use Cap\.limiter"):
        assert cap.sync is cap.limiter
    with pytest.warns(DeprecationWarning, match=r"Cap\.async_ is deprecated; use Cap\.limiter"):
        assert cap.async_ is cap.limiter

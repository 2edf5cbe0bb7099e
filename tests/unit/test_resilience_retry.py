"""@retry: tenacity underneath, budget, breaker awareness, Retry-After, deadlines."""

from __future__ import annotations

import asyncio
import email.utils
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from scalekit.errors import CircuitOpenError, ConfigurationError, RateLimitExceeded
from scalekit.resilience import (
    CircuitBreaker,
    RetryBudget,
    deadline,
    remaining,
    retry,
    retry_after_from,
)
from scalekit.testing import FakeClock


class Flaky(Exception):
    pass


class Fatal(Exception):
    pass


def flaky(failures: int, exc: type[Exception] = Flaky) -> tuple[list[int], object]:
    calls: list[int] = []

    def fn(x: int) -> int:
        calls.append(x)
        if len(calls) <= failures:
            raise exc(f"failure {len(calls)}")
        return x * 2

    return calls, fn


def test_first_attempt_success_calls_once_and_never_sleeps() -> None:
    clock = FakeClock()
    calls, fn = flaky(0)
    wrapped = retry(on=Flaky, clock=clock)(fn)  # type: ignore[arg-type]
    assert wrapped(21) == 42
    assert calls == [21] and clock.sleeps == []


def test_retries_with_exponential_backoff_and_jitter() -> None:
    clock = FakeClock()
    calls, fn = flaky(3)
    wrapped = retry(
        on=Flaky,
        attempts=5,
        wait_initial=1,
        wait_max=3,
        wait_jitter=0.5,
        rng=lambda: 0.5,
        clock=clock,
        budget=False,
    )(fn)  # type: ignore[arg-type]
    assert wrapped(1) == 2
    assert len(calls) == 4
    assert clock.sleeps == [1.25, 2.25, 3.25]  # 1, 2, 4 -> capped at 3; + 0.5 * 0.5


def test_gives_up_after_attempts_and_reraises_the_last_error() -> None:
    clock = FakeClock()
    calls, fn = flaky(10)
    wrapped = retry(on=Flaky, attempts=3, clock=clock, budget=False)(fn)  # type: ignore[arg-type]
    with pytest.raises(Flaky, match="failure 3"):
        wrapped(1)
    assert len(calls) == 3


def test_other_exceptions_are_not_retried() -> None:
    calls, fn = flaky(1, Fatal)
    wrapped = retry(on=Flaky, clock=FakeClock())(fn)  # type: ignore[arg-type]
    with pytest.raises(Fatal):
        wrapped(1)
    assert len(calls) == 1


def test_predicate_on() -> None:
    calls, fn = flaky(1)
    wrapped = retry(on=lambda e: "failure 1" in str(e), clock=FakeClock(), budget=False)(fn)  # type: ignore[arg-type]
    assert wrapped(2) == 4 and len(calls) == 2


async def test_async_retries() -> None:
    clock = FakeClock()
    attempts = 0

    @retry(on=Flaky, attempts=4, wait_initial=0.5, wait_jitter=0, clock=clock, budget=False)
    async def call() -> str:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise Flaky
        return "ok"

    assert await call() == "ok"
    assert attempts == 3 and clock.sleeps == [0.5, 1.0]


def test_budget_caps_retries_across_calls() -> None:
    clock = FakeClock()
    budget = RetryBudget(0.1, window=10, min_per_second=0, clock=clock)
    ok = retry(on=Flaky, clock=clock, budget=budget)(lambda: "ok")
    for _ in range(100):
        ok()
    calls, fn = flaky(1000)
    failing = retry(
        on=Flaky, attempts=3, wait_initial=0, wait_jitter=0, clock=clock, budget=budget
    )(fn)  # type: ignore[arg-type]
    for _ in range(20):
        with pytest.raises(Flaky):
            failing(1)
    stats = budget.stats()
    assert stats.calls == 120
    assert stats.retries == 12  # 10 % of 120 calls
    assert len(calls) == 20 + 12
    assert stats.refused > 0
    clock.advance(60)  # the window moved on: old calls no longer earn retries
    with pytest.raises(Flaky):
        failing(1)
    assert budget.stats().retries == 12


def test_budget_floor_per_second() -> None:
    clock = FakeClock()
    budget = RetryBudget(0.0, window=10, min_per_second=0.5, clock=clock)
    assert [budget.try_retry() for _ in range(6)] == [True] * 5 + [False]  # 0.5/s x 10 s
    clock.advance(10)  # the first five left the window
    assert budget.try_retry()
    assert budget.stats().refused == 1


def test_no_retry_while_the_breaker_is_open() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("dep", record=Flaky, failure_threshold=2, clock=clock)
    calls, fn = flaky(100)
    wrapped = retry(on=Flaky, attempts=10, clock=clock, budget=False)(breaker(fn))  # type: ignore[arg-type]
    with pytest.raises(Flaky):
        wrapped(1)
    assert len(calls) == 2  # the breaker opened after two: no third attempt
    with pytest.raises(CircuitOpenError):
        wrapped(1)  # rejected fast, not retried
    assert len(calls) == 2


def test_retry_after_is_honoured() -> None:
    clock = FakeClock()
    attempts = 0

    class Throttled(Exception):
        retry_after = 7.0

    @retry(on=Throttled, wait_initial=0.1, wait_jitter=0, clock=clock, budget=False)
    def call() -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise Throttled
        return "ok"

    assert call() == "ok"
    assert clock.sleeps == [7.0]


def test_retry_after_beyond_the_cap_gives_up() -> None:
    calls, fn = flaky(5)

    def long_wait(exc: BaseException) -> float:
        return 3600.0

    wrapped = retry(
        on=Flaky, retry_after=long_wait, max_retry_after=60, clock=FakeClock(), budget=False
    )(fn)  # type: ignore[arg-type]
    with pytest.raises(Flaky):
        wrapped(1)
    assert len(calls) == 1


def test_retry_after_from_headers_and_errors() -> None:
    assert retry_after_from(SimpleNamespace(retry_after=3)) == 3.0  # type: ignore[arg-type]
    resp = SimpleNamespace(headers={"retry-after": "12"})
    assert retry_after_from(SimpleNamespace(response=resp)) == 12.0  # type: ignore[arg-type]
    later = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    got = retry_after_from(
        SimpleNamespace(response=SimpleNamespace(headers={"Retry-After": later}))
    )  # type: ignore[arg-type]
    assert got is not None and 25 < got <= 30
    assert (
        retry_after_from(SimpleNamespace(response=SimpleNamespace(headers={"retry-after": "soon"})))
        is None
    )  # type: ignore[arg-type]
    assert retry_after_from(ValueError()) is None


def test_rate_limit_errors_carry_retry_after() -> None:
    from scalekit.ratelimit import RateLimiter

    clock = FakeClock()
    limiter = RateLimiter("memory://", "1/10s", clock=clock)
    limiter.hit("k")
    d = limiter.hit("k")
    assert d.retry_after > 0
    assert retry_after_from(RateLimitExceeded(d, "k")) == d.retry_after


def test_overall_deadline_stops_retries_and_reaches_nested_calls() -> None:
    clock = FakeClock()
    seen: list[float | None] = []
    calls, fn = flaky(100)

    def inner(x: int) -> int:
        seen.append(remaining())
        return fn(x)  # type: ignore[operator,no-any-return]

    wrapped = retry(
        on=Flaky,
        attempts=None,
        timeout=10,
        wait_initial=2,
        wait_max=2,
        wait_jitter=0,
        clock=clock,
        budget=False,
    )(inner)
    with pytest.raises(Flaky):
        wrapped(1)
    # attempts at t=0, 2, 4, 6, 8; a wait to t=10 would leave no time
    assert len(calls) == 5
    assert seen == [10.0, 8.0, 6.0, 4.0, 2.0]
    assert remaining() is None  # restored


def test_enclosing_deadline_narrows_the_retry_timeout() -> None:
    clock = FakeClock()
    calls, fn = flaky(100)
    wrapped = retry(
        on=Flaky,
        attempts=None,
        timeout=100,
        wait_initial=1,
        wait_max=1,
        wait_jitter=0,
        clock=clock,
        budget=False,
    )(fn)  # type: ignore[arg-type]
    with deadline(3.5, clock=clock), pytest.raises(Flaky):
        wrapped(1)
    assert len(calls) == 4  # t = 0, 1, 2, 3


def test_validation() -> None:
    with pytest.raises(TypeError):
        retry()  # type: ignore[call-arg]  # on= is required: no catch-all default
    with pytest.raises(ConfigurationError, match="attempts"):
        retry(on=Flaky, attempts=0)
    with pytest.raises(ConfigurationError, match="budget"):
        retry(on=Flaky, budget="lots")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="wait_exp_base"):
        retry(on=Flaky, wait_exp_base=0.5)
    with pytest.raises(ConfigurationError, match="ratio"):
        RetryBudget(-1)


def test_tenacity_strategies_plug_in() -> None:
    import tenacity

    clock = FakeClock()
    calls, fn = flaky(10)
    wrapped = retry(
        on=Flaky,
        attempts=None,
        wait=tenacity.wait_fixed(0.25),
        stop=tenacity.stop_after_attempt(4),
        clock=clock,
        budget=False,
    )(fn)  # type: ignore[arg-type]
    with pytest.raises(Flaky):
        wrapped(1)
    assert len(calls) == 4 and clock.sleeps == [0.25, 0.25, 0.25]


def test_real_clock_smoke() -> None:
    calls, fn = flaky(1)
    t0 = time.monotonic()
    assert retry(on=Flaky, wait_initial=0.001, wait_jitter=0)(fn)(3) == 6  # type: ignore[arg-type]
    assert time.monotonic() - t0 < 1.0 and len(calls) == 2


async def test_async_deadline_is_per_task() -> None:
    clock = FakeClock()

    async def read() -> float | None:
        await asyncio.sleep(0)
        return remaining()

    with deadline(5, clock=clock):
        inside = await asyncio.create_task(read())
    assert inside == 5.0
    assert await read() is None


def test_import_is_light_and_a_missing_tenacity_fails_at_decoration() -> None:
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import sys
        import scalekit.resilience
        assert "tenacity" not in sys.modules, "tenacity imported eagerly"
        assert "redis" not in sys.modules, "redis imported eagerly"
        sys.modules["tenacity"] = None  # as if the extra were not installed
        import importlib.util
        importlib.util.find_spec = lambda name, *a: None if name == "tenacity" else 1
        from scalekit.errors import MissingDependency
        try:
            scalekit.resilience.retry(on=OSError)
        except MissingDependency as exc:
            assert "scalekit-primitives[retry]" in str(exc)
        else:
            raise AssertionError("no MissingDependency")
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)

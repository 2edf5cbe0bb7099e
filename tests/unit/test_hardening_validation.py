"""Inputs checked once, at the boundary, through ``scalekit._validate``: hostile
numbers (NaN, inf, huge, bools, None) are a ConfigurationError everywhere, never a
bare TypeError, an endless wait or a value a backend cannot store."""

from __future__ import annotations

import asyncio
import enum
import math
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from scalekit import _validate as check
from scalekit.batching import DataLoader
from scalekit.errors import ConfigurationError
from scalekit.pools import PgPool, PoolSettings
from scalekit.resilience import BreakerPolicy, Bulkhead, CircuitBreaker, RetryBudget, retry
from scalekit.resilience._timeouts import deadline, timeout
from scalekit.sampling import Fixed, Keyed, Pipeline, Reservoir, Weighted, ramp
from scalekit.sampling._hash import hash_function, to_bytes

HOSTILE_DURATIONS = [math.nan, math.inf, -math.inf, -1.0, 1e16, timedelta(days=10**6), True, "1"]
HOSTILE_FRACTIONS = [math.nan, math.inf, -0.1, 1.5, None, True, "0.5"]
HOSTILE_COUNTS = [0, -1, 1.0, True, None, "3", 10**13]


async def _dl(keys: list[int]) -> list[int]:
    return keys


Build = Callable[[Any], object]
PG, REDIS = "postgresql://h", "redis://h"

# (what is built, a function of the hostile value); None is "no limit" for the last
# few durations, so it is not among the hostile ones
DURATIONS: dict[str, Build] = {
    "BreakerPolicy.open_duration": lambda v: BreakerPolicy(open_duration=v),
    "BreakerPolicy.probe_timeout": lambda v: BreakerPolicy(probe_timeout=v),
    "BreakerPolicy.max_open_duration": lambda v: BreakerPolicy(max_open_duration=v),
    "CircuitBreaker.open": lambda v: CircuitBreaker("b", record=OSError).open(v),
    "Bulkhead.queue_timeout": lambda v: Bulkhead(max_concurrent=1, queue_timeout=v),
    "RetryBudget.window": lambda v: RetryBudget(window=v),
    "retry.timeout": lambda v: retry(on=OSError, timeout=v),
    "retry.wait_max": lambda v: retry(on=OSError, wait_max=v),
    "timeout": lambda v: timeout(v),
    "deadline": lambda v: deadline(v).__enter__(),
    "PoolSettings.acquire_timeout": lambda v: PoolSettings(url=PG, acquire_timeout=v),
    "PoolSettings.max_lifetime": lambda v: PoolSettings(url=PG, max_lifetime=v),
    "PgPool.acquire": lambda v: PgPool(PG).acquire(timeout=v),
}
FRACTIONS: dict[str, Build] = {
    "Fixed": lambda v: Fixed(v),
    "Keyed": lambda v: Keyed(v, key=str),
    "ramp": lambda v: ramp(float, (1, v), (2, 0.5)),
    "BreakerPolicy.jitter": lambda v: BreakerPolicy(jitter=v),
    "PoolSettings.lifetime_jitter": lambda v: PoolSettings(url=REDIS, lifetime_jitter=v),
}
COUNTS: dict[str, Build] = {
    "Bulkhead.max_concurrent": lambda v: Bulkhead(max_concurrent=v),
    "BreakerPolicy.minimum_calls": lambda v: BreakerPolicy(minimum_calls=v),
    "BreakerPolicy.half_open_max_calls": lambda v: BreakerPolicy(half_open_max_calls=v),
    "Reservoir": lambda v: Reservoir(v),
    "PoolSettings.max_size": lambda v: PoolSettings(url=REDIS, max_size=v),
}
# where None means "no limit" or "off"
OPTIONAL_COUNTS: dict[str, Build] = {
    "retry.attempts": lambda v: retry(on=OSError, attempts=v),
    "DataLoader.max_batch_size": lambda v: DataLoader(_dl, max_batch_size=v),
}
THRESHOLDS: dict[str, Build] = {
    "failure_rate_threshold": lambda v: BreakerPolicy(failure_rate_threshold=v, window_size=9),
}


def _cases(table: dict[str, Build], values: list[object]) -> list[Any]:
    return [pytest.param(b, v, id=f"{w}={v!r}") for w, b in table.items() for v in values]


@pytest.mark.parametrize(
    ("build", "value"),
    _cases(DURATIONS, HOSTILE_DURATIONS)
    + _cases(FRACTIONS, HOSTILE_FRACTIONS)
    + _cases(COUNTS, HOSTILE_COUNTS)
    + _cases(OPTIONAL_COUNTS, [v for v in HOSTILE_COUNTS if v is not None])
    + _cases(THRESHOLDS, [0, 0.0, *(v for v in HOSTILE_FRACTIONS if v is not None)]),
)
def test_hostile_values_are_a_configuration_error(build: Build, value: object) -> None:
    with pytest.raises(ConfigurationError):
        build(value)


def test_timedelta_is_accepted_the_same_way_everywhere() -> None:
    assert Bulkhead(max_concurrent=1, queue_timeout=timedelta(seconds=2)).queue_timeout == 2.0
    assert BreakerPolicy(open_duration=timedelta(minutes=1)).open_s == 60.0
    assert RetryBudget(window=timedelta(seconds=5)).window == 5.0
    assert (
        PoolSettings(url="redis://h", connect_timeout=timedelta(milliseconds=5)).connect_timeout
        == 0.005
    )


def test_number_validator() -> None:
    assert check.number(2, "m", minimum=1) == 2.0
    assert check.number(1e-300, "w", minimum=0, open_minimum=True) == 1e-300
    for bad in (0, math.nan, math.inf, True, None):
        with pytest.raises(ConfigurationError, match="w must be a finite number > 0"):
            check.number(bad, "w", minimum=0, open_minimum=True)
    with pytest.raises(ConfigurationError, match=r"in \[0, 10\]"):
        check.number(11, "r", minimum=0, maximum=10)


# -- values returned by user functions at run time -----------------------------------


@pytest.mark.parametrize("returned", [None, "0.5", b"1", True, [0.5]])
def test_a_weighted_probability_that_is_not_a_number_is_a_configuration_error(
    returned: object,
) -> None:
    """Before: ``None >= 1.0`` raised a bare TypeError out of the pipeline."""
    p = Pipeline(Weighted(lambda m: returned, name="w"))  # type: ignore[arg-type,return-value]
    with pytest.raises(ConfigurationError, match=r"Weighted 'w': probability\(item\) must return"):
        p.decide(1)


def test_weighted_accepts_every_real_number_and_clamps_it() -> None:
    from decimal import Decimal  # not a float or int: refused, like a str

    for value, kept in ((1, True), (0, False), (2.5, True), (-3, False), (math.nan, False)):
        assert Pipeline(Weighted(lambda m, v=value: v)).decide(1).sampled is kept  # type: ignore[misc]
    with pytest.raises(ConfigurationError):
        Pipeline(Weighted(lambda m: Decimal("0.5"))).decide(1)  # type: ignore[arg-type,return-value]


def test_a_ramp_whose_value_is_not_a_number_is_a_configuration_error() -> None:
    p = Pipeline(Weighted(ramp(lambda m: m, (1, 0.2), (5, 0.4))))
    assert p.decide(3).stage in ("weighted", "")
    with pytest.raises(ConfigurationError, match=r"ramp: value\(item\) must return a number"):
        p.decide(None)


# -- hostile sampling ids ---------------------------------------------------------------


class Plan(enum.StrEnum):
    FREE = "free"


class Level(enum.IntEnum):
    ONE = 1


@pytest.mark.parametrize("name", ["crc32", "blake2b"])
def test_sampling_ids_str_subclasses_surrogates_and_huge_ints(name: str) -> None:
    h = hash_function(name, "salt")  # type: ignore[arg-type]
    assert h(Plan.FREE) == h("free")  # before: "must be a str, bytes or int"
    assert h(Level.ONE) == h(1)
    h("\ud800")  # a lone surrogate hashes (before: UnicodeEncodeError)
    assert h("\ud800") != h("\ud801")
    assert to_bytes("\ud800") == b"\xed\xa0\x80"
    huge = 10 ** (sys.get_int_max_str_digits() + 1)
    with pytest.raises(ConfigurationError, match="stable id"):
        h(huge)  # before: ValueError (int too large to convert to str)


def test_the_keyed_fast_path_agrees_on_surrogates_and_str_subclasses() -> None:
    keyed = Keyed(0.5, key=lambda m: m)
    p = Pipeline(keyed)
    for item in ("\ud800x", Plan.FREE, "free", "é"):
        assert p.decide(item).sampled == (keyed.unit(item) < 0.5)


# -- double release --------------------------------------------------------------------


def test_a_bulkhead_released_twice_refuses_instead_of_raising_its_bound() -> None:
    b = Bulkhead(max_concurrent=1)
    with b:
        pass
    with pytest.raises(ConfigurationError, match="released twice"):
        b.release()
    b.acquire()  # before: the extra release made room for two
    with pytest.raises(Exception, match="full"):
        b.acquire()
    b.release()
    assert b.stats().running == 0


async def test_a_bulkhead_cancelled_waiter_passes_its_slot_on() -> None:
    b = Bulkhead(max_concurrent=1, max_queued=2)
    await b.aacquire()
    waiter = asyncio.create_task(b.aacquire())
    await asyncio.sleep(0)
    b.release()  # granted to the waiter...
    waiter.cancel()  # ...which is cancelled before it runs: the slot moves on
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert b.stats().running == 0
    async with asyncio.timeout(1):
        await b.aacquire()
    b.release()
    with pytest.raises(ConfigurationError):
        b.release()


# -- numbers from the outside: Retry-After headers, decisions, backoff ------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("12", 12.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("nan", None),
        ("inf", None),
        ("-5", None),
        ("1_0", None),  # float() takes it
        ("\u0661\u0660", None),  # Arabic-Indic digits: float() takes them too
        ("1e3", None),
        ("9" * 400, None),  # float("9"*400) is inf
    ],
)
def test_retry_after_header_takes_ascii_delta_seconds_only(
    header: str, expected: float | None
) -> None:
    from types import SimpleNamespace

    from scalekit.resilience import retry_after_from

    exc = SimpleNamespace(response=SimpleNamespace(headers={"retry-after": header}))
    assert retry_after_from(exc) == expected  # type: ignore[arg-type]


def test_a_huge_backoff_base_caps_the_wait_instead_of_overflowing() -> None:
    calls: list[int] = []

    @retry(on=OSError, attempts=5, wait_initial=0, wait_max=0, wait_jitter=0, wait_exp_base=1e300)
    def flaky() -> int:
        calls.append(1)
        if len(calls) < 5:
            raise OSError("again")
        return len(calls)

    assert flaky() == 5  # before: OverflowError from 1e300 ** 2 on the third attempt


@pytest.mark.parametrize("seconds", [math.inf, math.nan, 1e300])
def test_rate_limit_headers_survive_non_finite_decisions(seconds: float) -> None:
    from scalekit.ratelimit._decision import Decision
    from scalekit.ratelimit.asgi import rate_limit_headers

    d = Decision(False, 10, 0, seconds, seconds, "p", 60.0)
    headers = dict(rate_limit_headers(d, "both"))  # before: OverflowError / ValueError
    reset = int(headers[b"x-ratelimit-reset"])
    assert 0 <= reset <= check.MAX_SECONDS

"""Every read of the cache returns the declared type on every backend, on a miss
(the loader's value) and on a hit (decoded from the store): ``type(result)`` checked
for a dataclass, a pydantic model, an int, a dict and a list of dataclasses."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest

from scalekit.cache._core import Cache
from scalekit.cache._decorator import cached
from scalekit.cache._refresh import RefreshAhead
from scalekit.errors import ConfigurationError
from scalekit.testing import FakeClock


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


class User(pydantic.BaseModel):
    id: int
    name: str


CASES: list[tuple[str, Any, Any]] = [
    ("dataclass", Point, Point(1, 2)),
    ("pydantic", User, User(id=1, name="ada")),
    ("int", int, 42),
    ("dict", dict[str, int], {"a": 1}),
    ("list-of-dataclasses", list[Point], [Point(1, 2), Point(3, 4)]),
]
IDS = [c[0] for c in CASES]


def _check(result: Any, expected: Any) -> None:
    assert type(result) is type(expected)
    assert result == expected
    if isinstance(expected, list):
        assert [type(v) for v in result] == [type(v) for v in expected]


@pytest.fixture
def cache(cache_backend: Any, clock: FakeClock) -> Iterator[Cache]:
    c = Cache(cache_backend, name="types", clock=clock)
    yield c
    assert c.drain(10.0)


@pytest.mark.parametrize(("case", "hint", "value"), CASES, ids=IDS)
def test_get_or_load_and_get(cache: Cache, case: str, hint: Any, value: Any) -> None:
    key = f"gol:{case}"
    _check(cache.get_or_load(key, lambda: value, type_hint=hint), value)  # miss
    _check(cache.get_or_load(key, lambda: None, type_hint=hint), value)  # hit
    _check(cache.get(key, type_hint=hint), value)
    cache.set(f"set:{case}", value)
    _check(cache.get(f"set:{case}", type_hint=hint), value)


@pytest.mark.parametrize(("case", "hint", "value"), CASES, ids=IDS)
async def test_aget_or_load_and_aget(cache: Cache, case: str, hint: Any, value: Any) -> None:
    key = f"agol:{case}"

    async def load() -> Any:
        return value

    _check(await cache.aget_or_load(key, load, type_hint=hint), value)
    _check(await cache.aget_or_load(key, load, type_hint=hint), value)
    _check(await cache.aget(key, type_hint=hint), value)


def test_cached_functions_return_their_annotation(cache: Cache) -> None:
    @cached(ttl=60, cache=cache)
    def point(x: int) -> Point:
        return Point(x, x)

    @cached(ttl=60, cache=cache)
    def user(i: int) -> User:
        return User(id=i, name="ada")

    @cached(ttl=60, cache=cache)
    def count(i: int) -> int:
        return i

    @cached(ttl=60, cache=cache)
    def mapping(i: int) -> dict[str, int]:
        return {"a": i}

    @cached(ttl=60, cache=cache)
    def points(i: int) -> list[Point]:
        return [Point(i, i)]

    for _ in range(2):  # miss, then hit
        _check(point(1), Point(1, 1))
        _check(user(1), User(id=1, name="ada"))
        _check(count(1), 1)
        _check(mapping(1), {"a": 1})
        _check(points(1), [Point(1, 1)])
    assert cache.stats().hits == 5


async def test_async_cached_functions_return_their_annotation(cache: Cache) -> None:
    @cached(ttl=60, cache=cache)
    async def point(x: int) -> Point:
        return Point(x, x)

    @cached(ttl=60, cache=cache)
    async def points(i: int) -> list[Point]:
        return [Point(i, i)]

    for _ in range(2):
        _check(await point(1), Point(1, 1))
        _check(await points(1), [Point(1, 1)])


def test_a_forward_reference_is_resolved_at_first_call(cache: Cache) -> None:
    @cached(ttl=60, cache=cache)
    def later(i: int) -> Later:  # noqa: F821 - defined below, after decoration
        return globals()["Later"](i)

    globals()["Later"] = _Later
    try:
        for _ in range(2):
            _check(later(1), _Later(1))
    finally:
        del globals()["Later"]


async def test_an_async_forward_reference_is_resolved_at_first_call(cache: Cache) -> None:
    @cached(ttl=60, cache=cache)
    async def later(i: int) -> Later:  # noqa: F821
        return globals()["Later"](i)

    globals()["Later"] = _Later
    try:
        for _ in range(2):
            _check(await later(1), _Later(1))
    finally:
        del globals()["Later"]


async def test_refresh_ahead_readers_read_the_declared_type(cache: Cache) -> None:
    job = RefreshAhead(
        cache, "trending", lambda: [Point(1, 2)], ttl=60, refresh_ahead=10, type_hint=list[Point]
    )
    job.run_pending()
    _check(cache.get("trending", type_hint=list[Point]), [Point(1, 2)])
    _check(await cache.aget("trending", type_hint=list[Point]), [Point(1, 2)])


@dataclasses.dataclass(frozen=True)
class _Later:
    i: int


def test_an_unresolvable_forward_reference_fails_at_first_call_naming_the_fix(
    cache: Cache,
) -> None:
    @cached(ttl=60, cache=cache)
    def ghost(i: int) -> Ghost:  # noqa: F821 - never defined
        raise AssertionError("not called")

    if cache._in_process:  # an in-process backend keeps the objects: no type needed
        return
    with pytest.raises(ConfigurationError, match=r"ghost: its return annotation.*type_hint="):
        ghost(1)


def test_type_hint_wins_over_a_missing_annotation(cache: Cache) -> None:
    @cached(ttl=60, cache=cache, type_hint=Point)
    def point(x):  # type: ignore[no-untyped-def]
        return Point(x, x)

    for _ in range(2):
        _check(point(1), Point(1, 1))
    assert cache.stats().hits == 1


def test_without_a_type_a_value_that_would_not_read_back_is_not_stored(
    cache: Cache, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    @cached(ttl=60, cache=cache)
    def point(x):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return Point(x, x)

    @cached(ttl=60, cache=cache)
    def plain(x):  # type: ignore[no-untyped-def]
        return {"x": [x, "a", None, 1.5]}

    with caplog.at_level(logging.WARNING, logger="scalekit.cache"):
        for _ in range(3):
            _check(point(1), Point(1, 1))  # never a dict on a hit
            _check(plain(1), {"x": [1, "a", None, 1.5]})
    if cache._in_process:
        assert calls == 1
        return
    assert calls == 3  # served, not stored
    assert cache.stats().hits == 2  # the plain value was stored and hit
    warned = [r for r in caplog.records if "cannot be stored" in r.getMessage()]
    assert len(warned) == 1 and "type_hint=" in warned[0].getMessage()
    # get_or_load without type_hint follows the same rule
    _check(cache.get_or_load("p", lambda: Point(2, 2)), Point(2, 2))
    assert cache.get("p") is None

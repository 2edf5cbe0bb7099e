"""DataLoader semantics: one call per tick, dedupe, order, errors, scopes, cancellation."""

from __future__ import annotations

import asyncio
import contextvars
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalekit.batching import BatchScopeMiddleware, DataLoader, request_scope
from scalekit.errors import ConfigurationError


class Recorder:
    """A batch function that records its calls and returns ``f"v{key}"``."""

    def __init__(self) -> None:
        self.calls: list[list[Any]] = []
        self.fail_keys: set[Any] = set()
        self.raise_next: BaseException | None = None

    async def __call__(self, keys: list[Any]) -> list[Any]:
        self.calls.append(list(keys))
        await asyncio.sleep(0)  # a real batch function awaits I/O
        if self.raise_next is not None:
            exc, self.raise_next = self.raise_next, None
            raise exc
        return [ValueError(f"bad {k}") if k in self.fail_keys else f"v{k}" for k in keys]


async def test_loads_of_one_tick_become_one_call_deduplicated_in_key_order() -> None:
    fn = Recorder()
    loader: DataLoader[int, str] = DataLoader(fn)
    keys = [5, 3, 5, 1, 3, 9, 5]
    results = await asyncio.gather(*(loader.load(k) for k in keys))
    assert results == [f"v{k}" for k in keys]
    assert fn.calls == [[5, 3, 1, 9]]
    s = loader.stats()
    assert (s.loads, s.keys_dispatched, s.batches) == (7, 4, 1)
    assert s.dedupe_ratio == pytest.approx(3 / 7)
    assert s.batch_size_histogram[2] == 1  # a batch of 4


async def test_later_ticks_make_new_batches() -> None:
    fn = Recorder()
    loader: DataLoader[int, str] = DataLoader(fn)
    assert await loader.load(1) == "v1"
    assert await loader.load(2) == "v2"
    assert fn.calls == [[1], [2]]


async def test_load_many_is_one_batch() -> None:
    fn = Recorder()
    loader: DataLoader[int, str] = DataLoader(fn)
    assert await loader.load_many([3, 1, 3]) == ["v3", "v1", "v3"]
    assert fn.calls == [[3, 1]]


async def test_per_key_errors_fail_only_their_key_and_are_not_cached() -> None:
    fn = Recorder()
    fn.fail_keys = {2}
    loader: DataLoader[int, str] = DataLoader(fn)
    async with request_scope():
        results = await asyncio.gather(*(loader.load(k) for k in (1, 2, 3)), return_exceptions=True)
        assert results[0] == "v1" and results[2] == "v3"
        assert isinstance(results[1], ValueError) and str(results[1]) == "bad 2"
        again = await loader.load_many([1, 2, 3], return_exceptions=True)
        assert again[0] == "v1" and again[2] == "v3" and isinstance(again[1], ValueError)
        assert fn.calls == [[1, 2, 3], [2]]  # 1 and 3 came from the cache, 2 was tried again
        fn.fail_keys.clear()
        assert await loader.load(2) == "v2"
    assert loader.stats().key_errors == 2


async def test_a_failed_batch_fails_every_waiter_and_is_never_cached() -> None:
    fn = Recorder()
    fn.raise_next = RuntimeError("db down")
    loader: DataLoader[int, str] = DataLoader(fn)
    async with request_scope():
        results = await asyncio.gather(*(loader.load(k) for k in (1, 2)), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in results)
        assert await loader.load_many([1, 2]) == ["v1", "v2"]  # retried, not cached
        assert fn.calls == [[1, 2], [1, 2]]
    assert loader.stats().failed_batches == 1


async def test_max_batch_size_splits_a_tick_into_several_calls() -> None:
    fn = Recorder()
    loader: DataLoader[int, str] = DataLoader(fn, max_batch_size=10)
    results = await loader.load_many(range(25))
    assert results == [f"v{k}" for k in range(25)]
    assert [len(c) for c in fn.calls] == [10, 10, 5]
    assert loader.stats().largest_batch == 10
    with pytest.raises(ConfigurationError, match="max_batch_size"):
        DataLoader(fn, max_batch_size=0)


async def test_cache_lives_in_the_request_scope_only() -> None:
    fn = Recorder()
    loader: DataLoader[int, str] = DataLoader(fn)
    async with request_scope():
        await loader.load(1)
        await loader.load(1)
        assert fn.calls == [[1]]
        assert loader.stats().cache_hits == 1
    async with request_scope():  # a new request starts empty
        await loader.load(1)
    assert fn.calls == [[1], [1]]
    await loader.load(1)  # outside any scope: nothing remembered across ticks
    await loader.load(1)
    assert fn.calls == [[1], [1], [1], [1]]


USER: contextvars.ContextVar[str] = contextvars.ContextVar("user")


async def test_concurrent_requests_never_see_each_others_cache() -> None:
    calls: list[tuple[str, list[int]]] = []

    async def visible_to_user(keys: list[int]) -> list[str]:
        calls.append((USER.get(), keys))
        await asyncio.sleep(0)
        return [f"{USER.get()}:{k}" for k in keys]

    loader: DataLoader[int, str] = DataLoader(visible_to_user)  # one module-level loader
    gate = asyncio.Event()

    async def request(user: str) -> list[str]:
        USER.set(user)
        async with request_scope():
            first = await loader.load(1)
            await gate.wait()  # both requests hold their scope open at the same time
            return [first, await loader.load(1), *(await loader.load_many([1, 2]))]

    tasks = [asyncio.create_task(request(u)) for u in ("alice", "bob")]
    await asyncio.sleep(0.01)
    gate.set()
    alice, bob = await asyncio.gather(*tasks)
    assert alice == ["alice:1", "alice:1", "alice:1", "alice:2"]
    assert bob == ["bob:1", "bob:1", "bob:1", "bob:2"]
    assert sorted(calls) == [("alice", [1]), ("alice", [2]), ("bob", [1]), ("bob", [2])]


async def test_prime_and_clear() -> None:
    fn = Recorder()
    loader: DataLoader[int, str] = DataLoader(fn)
    async with request_scope():
        loader.prime(7, "primed")
        assert await loader.load(7) == "primed"
        loader.clear(7)
        assert await loader.load(7) == "v7"
        loader.clear()
        assert await loader.load(7) == "v7"
    assert fn.calls == [[7], [7]]


async def test_cancelling_one_waiter_leaves_the_others_waiting_for_the_same_key() -> None:
    release = asyncio.Event()

    async def slow(keys: list[int]) -> list[int]:
        await release.wait()
        return [k * 10 for k in keys]

    loader: DataLoader[int, int] = DataLoader(slow)
    a = asyncio.create_task(loader.load(1))
    b = asyncio.create_task(loader.load(1))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    a.cancel()
    release.set()
    assert await b == 10
    with pytest.raises(asyncio.CancelledError):
        await a


async def test_mapping_results_missing_keys_and_bad_results() -> None:
    async def as_mapping(keys: list[int]) -> dict[int, str]:
        return {k: f"m{k}" for k in keys if k % 2}

    strict: DataLoader[int, str] = DataLoader(as_mapping)
    assert await strict.load(1) == "m1"
    with pytest.raises(KeyError):
        await strict.load(2)
    lenient: DataLoader[int, str | None] = DataLoader(as_mapping, default=None)
    assert await lenient.load_many([1, 2]) == ["m1", None]

    async def short(keys: list[int]) -> list[int]:
        return keys[:-1]

    loader: DataLoader[int, int] = DataLoader(short)
    with pytest.raises(ConfigurationError, match="returned 1 value"):
        await loader.load_many([1, 2])


async def test_asgi_middleware_gives_each_request_a_scope() -> None:
    fn = Recorder()
    loader: DataLoader[int, str] = DataLoader(fn)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await loader.load(1)
        await loader.load(1)

    wrapped = BatchScopeMiddleware(app)
    for _ in range(2):
        await wrapped({"type": "http"}, None, None)
    assert fn.calls == [[1], [1]]  # cached within each request, not across


@settings(max_examples=60, deadline=None)
@given(
    keys=st.lists(st.integers(0, 30), max_size=80),
    max_batch=st.one_of(st.none(), st.integers(1, 20)),
)
def test_every_key_is_dispatched_once_and_answered_in_order(
    keys: list[int], max_batch: int | None
) -> None:
    fn = Recorder()
    loader: DataLoader[int, str] = DataLoader(fn, max_batch_size=max_batch)

    async def main() -> list[str]:
        return list(await asyncio.gather(*(loader.load(k) for k in keys)))

    assert asyncio.run(main()) == [f"v{k}" for k in keys]
    dispatched = [k for call in fn.calls for k in call]
    unique = list(dict.fromkeys(keys))
    assert dispatched == unique
    limit = max_batch or max(len(unique), 1)
    assert all(len(call) <= limit for call in fn.calls)
    assert len(fn.calls) == math.ceil(len(unique) / limit)

"""DataLoader under hostile conditions: collected batch tasks, cancellation, bad input."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

import pytest

from scalekit.batching import DataLoader
from scalekit.errors import ConfigurationError


async def test_a_batch_task_is_not_collected_while_it_runs() -> None:
    """The loop holds tasks weakly: a batch awaiting a future that only the task
    references was garbage-collected mid-flight ("Task was destroyed but it is
    pending!") and its waiters were failed with GeneratorExit."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    started = asyncio.Event()
    handles: list[weakref.ref[asyncio.Future[None]]] = []

    async def batch(keys: list[int]) -> list[int]:
        fut: asyncio.Future[None] = loop.create_future()
        handles.append(weakref.ref(fut))  # only the batch task holds the future
        started.set()
        await fut
        return [k * 10 for k in keys]

    loader: DataLoader[int, int] = DataLoader(batch)
    waiter = asyncio.ensure_future(loader.load(4))
    await started.wait()
    gc.collect()
    await asyncio.sleep(0)
    assert not waiter.done()
    assert errors == []
    fut = handles[0]()
    assert fut is not None  # the task, and so its future, is still alive
    fut.set_result(None)
    assert await waiter == 40
    loop.set_exception_handler(None)


async def test_a_cancelled_caller_does_not_cancel_the_batch_for_others() -> None:
    gate = asyncio.Event()

    async def batch(keys: list[str]) -> list[str]:
        await gate.wait()
        return [k.upper() for k in keys]

    loader: DataLoader[str, str] = DataLoader(batch)
    first = asyncio.ensure_future(loader.load("a"))
    second = asyncio.ensure_future(loader.load("a"))
    await asyncio.sleep(0)
    first.cancel()
    gate.set()
    assert await second == "A"
    with pytest.raises(asyncio.CancelledError):
        await first


def test_bad_options_are_configuration_errors() -> None:
    async def batch(keys: list[int]) -> list[int]:
        return keys

    for kwargs in ({"max_batch_size": 0}, {"max_batch_size": True}, {"name": ""}):
        with pytest.raises(ConfigurationError):
            DataLoader(batch, **kwargs)  # type: ignore[arg-type]

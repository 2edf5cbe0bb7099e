"""Bulkheads: at most N calls at once, a bounded FIFO queue, one object for threads
and asyncio tasks (loops in any thread)."""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar, cast

from scalekit import _validate as check
from scalekit._decorated import attach
from scalekit.errors import BulkheadFull, ConfigurationError
from scalekit.observability._metrics import default_registry as _metrics

__all__ = ["Bulkhead", "BulkheadStats", "bulkhead"]

_ADMITTED = _metrics.counter(
    "scalekit_bulkhead_admitted_total", "Calls admitted.", labels=("bulkhead",)
)
_REJECTED = _metrics.counter(
    "scalekit_bulkhead_rejected_total", "Calls rejected (full).", labels=("bulkhead",)
)
_RUNNING = _metrics.gauge("scalekit_bulkhead_running", "Calls running now.", labels=("bulkhead",))
_QUEUED = _metrics.gauge(
    "scalekit_bulkhead_queued", "Calls waiting for a slot now.", labels=("bulkhead",)
)


def _reader(ref: weakref.ref[Bulkhead], what: str) -> Callable[[], float]:
    def read() -> float:
        b = ref()
        if b is None:
            return 0.0
        return float(b._running if what == "running" else len(b._waiters))

    return read


P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class BulkheadStats:
    """Running and queued now; admitted and rejected in total."""

    running: int
    queued: int
    admitted: int
    rejected: int


class _Waiter:
    __slots__ = ("event", "future", "granted", "loop")

    def __init__(self) -> None:
        self.granted = False
        self.event: threading.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.future: asyncio.Future[None] | None = None


def _thread_waiter() -> _Waiter:
    w = _Waiter()
    w.event = threading.Event()
    return w


def _task_waiter() -> _Waiter:
    w = _Waiter()
    w.loop = asyncio.get_running_loop()
    w.future = w.loop.create_future()
    return w


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Bulkhead:
    """At most ``max_concurrent`` calls run at once; up to ``max_queued`` more wait
    (first come, first served) for at most ``queue_timeout`` seconds (``None``:
    as long as it takes). A call that finds the queue full, or whose wait runs
    out, raises :class:`~scalekit.errors.BulkheadFull`; rejections are counted.

    The instance decorates sync and async functions (all sharing its slots) and is
    a context manager (``with`` / ``async with``).
    """

    def __init__(
        self,
        name: str = "bulkhead",
        *,
        max_concurrent: int,
        max_queued: int = 0,
        queue_timeout: float | timedelta | None = None,
    ) -> None:
        self.name = check.name(name, "name")
        self.max_concurrent = check.count(max_concurrent, "max_concurrent")
        self.max_queued = check.count(max_queued, "max_queued", minimum=0)
        self.queue_timeout = check.timeout(queue_timeout, "queue_timeout")
        self._lock = threading.Lock()
        self._running = 0
        self._waiters: deque[_Waiter] = deque()
        self._admitted = _ADMITTED.attach(self, self.name)
        self._rejected = _REJECTED.attach(self, self.name)
        ref = weakref.ref(self)
        _RUNNING.attach(self, self.name).set_function(_reader(ref, "running"))
        _QUEUED.attach(self, self.name).set_function(_reader(ref, "queued"))

    def __repr__(self) -> str:
        return (
            f"Bulkhead({self.name!r}, max_concurrent={self.max_concurrent}, "
            f"max_queued={self.max_queued})"
        )

    def stats(self) -> BulkheadStats:
        with self._lock:
            return BulkheadStats(
                self._running,
                len(self._waiters),
                int(self._admitted.value),
                int(self._rejected.value),
            )

    def _full(self) -> BulkheadFull:
        self._rejected.inc()
        return BulkheadFull(self.name, self.max_concurrent, self.max_queued)

    # -- slots -----------------------------------------------------------------
    def _enter(self, waiter: Callable[[], _Waiter]) -> _Waiter | None:
        """Take a free slot (None), or queue a new waiter, or raise BulkheadFull."""
        with self._lock:
            if self._running < self.max_concurrent:
                self._running += 1
                self._admitted.inc()
                return None
            if len(self._waiters) >= self.max_queued:
                raise self._full()
            w = waiter()
            self._waiters.append(w)
            return w

    def acquire(self) -> None:
        """Take a slot, waiting in the queue if allowed (threads)."""
        w = self._enter(_thread_waiter)
        if w is None:
            return
        assert w.event is not None
        w.event.wait(self.queue_timeout)
        with self._lock:
            if w.granted:
                self._admitted.inc()
                return
            self._waiters.remove(w)
            raise self._full()

    async def aacquire(self) -> None:
        """Take a slot, waiting in the queue if allowed (asyncio)."""
        w = self._enter(_task_waiter)
        if w is None:
            return
        assert w.future is not None
        try:
            async with asyncio.timeout(self.queue_timeout):
                await w.future
        except TimeoutError:
            with self._lock:
                if not w.granted:
                    self._waiters.remove(w)
                    raise self._full() from None
            # handed a slot just as the wait ran out: keep it
        except BaseException:  # cancelled while queued
            with self._lock:
                granted = w.granted
                if not granted:
                    self._waiters.remove(w)
            if granted:
                self.release()  # pass the slot on
            raise
        self._admitted.inc()

    def release(self) -> None:
        """Give a slot back: to the first waiter in the queue, or to the pool.

        Like ``asyncio.BoundedSemaphore``: a release with no slot taken (a double
        release) raises :class:`~scalekit.errors.ConfigurationError` instead of
        letting more than ``max_concurrent`` calls run.
        """
        with self._lock:
            if self._running == 0:
                raise ConfigurationError(
                    f"bulkhead {self.name!r}: release() without a slot taken (released twice?)"
                )
            while self._waiters:
                w = self._waiters.popleft()
                w.granted = True
                if w.event is not None:
                    w.event.set()
                    return
                assert w.loop is not None and w.future is not None
                try:
                    w.loop.call_soon_threadsafe(_wake, w.future)
                except RuntimeError:  # its loop is closed: skip that waiter
                    continue
                return
            self._running -= 1

    @contextmanager
    def slot(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()

    @asynccontextmanager
    async def aslot(self) -> AsyncIterator[None]:
        await self.aacquire()
        try:
            yield
        finally:
            self.release()

    def __enter__(self) -> Bulkhead:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    async def __aenter__(self) -> Bulkhead:
        await self.aacquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    # -- decorating ---------------------------------------------------------------
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        if inspect.iscoroutinefunction(fn):
            afn = cast(Callable[P, Awaitable[Any]], fn)

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                await self.aacquire()
                try:
                    return await afn(*args, **kwargs)
                finally:
                    self.release()

            attach(async_wrapper, self, "bulkhead")
            return cast(Callable[P, R], async_wrapper)

        @functools.wraps(fn)
        def sync_wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            self.acquire()
            try:
                return fn(*args, **kwargs)
            finally:
                self.release()

        attach(sync_wrapper, self, "bulkhead")
        return sync_wrapper


def bulkhead(
    name: str = "bulkhead",
    *,
    max_concurrent: int,
    max_queued: int = 0,
    queue_timeout: float | timedelta | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate one function with a :class:`Bulkhead` of its own."""
    return Bulkhead(
        name, max_concurrent=max_concurrent, max_queued=max_queued, queue_timeout=queue_timeout
    )

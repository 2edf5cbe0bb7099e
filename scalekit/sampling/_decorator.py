"""``@sampled`` for sync and async functions, and :class:`BackgroundTasks` for
fire-and-forget asyncio work with bounded concurrency."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass
from typing import Any, ParamSpec, Protocol, TypeVar, cast, overload

from scalekit import _validate as check
from scalekit._decorated import attach
from scalekit.errors import ConfigurationError
from scalekit.observability._metrics import default_registry as _metrics
from scalekit.sampling._decision import SampleDecision
from scalekit.sampling._pipeline import Pipeline

__all__ = ["BackgroundTasks", "SampledDecorator", "TaskStats", "sampled"]

log = logging.getLogger("scalekit.sampling")

_TASKS = {
    what: _metrics.counter(f"scalekit_tasks_{what}_total", help, labels=("tasks",))
    for what, help in (
        ("spawned", "Background tasks spawned."),
        ("succeeded", "Tasks that returned."),
        ("failed", "Tasks that raised."),
        ("dropped", "Tasks dropped (limit reached)."),
        ("cancelled", "Tasks cancelled."),
    )
}
_RUNNING = _metrics.gauge("scalekit_tasks_running", "Tasks not finished.", labels=("tasks",))


def _running(ref: weakref.ref[BackgroundTasks]) -> Callable[[], float]:
    def read() -> float:
        tasks = ref()
        return float(tasks.running) if tasks is not None else 0.0

    return read


P = ParamSpec("P")
R = TypeVar("R")
D = TypeVar("D")
D_co = TypeVar("D_co", covariant=True)


class SampledDecorator(Protocol[D_co]):
    """What ``sampled(...)`` returns: a skipped call returns the declared value, so an
    ``async def`` returning ``R`` becomes one returning ``R | D`` (awaited), and a
    plain function returning ``R`` one returning ``R | D``."""

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R | D_co]]: ...

    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R | D_co]: ...


@overload
def sampled(
    pipeline: Pipeline[Any], *, item: Callable[..., Any] | None = None
) -> SampledDecorator[None]: ...


@overload
def sampled(
    pipeline: Pipeline[Any], *, item: Callable[..., Any] | None = None, skipped: D
) -> SampledDecorator[D]: ...


def sampled(
    pipeline: Pipeline[Any],
    *,
    item: Callable[..., Any] | None = None,
    skipped: Any = None,
) -> SampledDecorator[Any]:
    """Run the function only for the calls ``pipeline`` samples.

    ``item`` builds what the pipeline decides on from the call's arguments
    (default: the first positional argument). A skipped call returns ``skipped``
    (default ``None``) without calling the function. Works on sync and async
    functions (the async wrapper awaits :meth:`Pipeline.adecide`); the function
    is inspected once, at decoration time. ``primitive_of(fn, Pipeline)`` is the
    pipeline (for its :meth:`~Pipeline.stats`).
    """
    if not isinstance(pipeline, Pipeline):
        raise ConfigurationError(f"@sampled needs a Pipeline, got {pipeline!r}")
    if item is not None and not callable(item):
        raise ConfigurationError(
            f"item must be a callable taking the call's arguments, got {item!r}"
        )

    def subject(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if item is not None:
            return item(*args, **kwargs)
        if args:
            return args[0]
        if len(kwargs) == 1:
            return next(iter(kwargs.values()))
        raise ConfigurationError(
            "@sampled without item= decides on the first positional argument, but the call "
            "had none; pass item=lambda *args, **kwargs: ..."
        )

    def decorate(fn: Callable[P, R]) -> Callable[P, Any]:
        if inspect.iscoroutinefunction(fn):
            afn = cast(Callable[P, Awaitable[Any]], fn)
            adecide = pipeline.adecide

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                if (await adecide(subject(args, kwargs))).sampled:
                    return await afn(*args, **kwargs)
                return skipped

            attach(async_wrapper, pipeline, "pipeline")
            return async_wrapper

        decide = pipeline.decide

        @functools.wraps(fn)
        def sync_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            if decide(subject(args, kwargs)).sampled:
                return fn(*args, **kwargs)
            return skipped

        attach(sync_wrapper, pipeline, "pipeline")
        return sync_wrapper

    return cast(SampledDecorator[Any], decorate)


@dataclass(frozen=True, slots=True)
class TaskStats:
    """What a :class:`BackgroundTasks` did, read from its counters in the metrics
    registry: tasks ``spawned``, ``succeeded``, ``failed``, ``dropped`` (no slot and no
    room to wait), ``cancelled``, and ``running`` now."""

    spawned: int
    succeeded: int
    failed: int
    dropped: int
    cancelled: int
    running: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class BackgroundTasks:
    """Fire-and-forget asyncio work: at most ``concurrency`` coroutines run at once,
    at most ``max_pending`` wait; errors are logged (with the traceback) and counted,
    never lost.

    ``spawn(coro)`` returns at once. The tasks are referenced until they finish, so
    the event loop cannot garbage-collect them half-way. When ``max_pending``
    coroutines already wait, a new one is dropped (closed without running, logged,
    counted): background work must not grow without bound. ``await drain()`` waits
    for everything spawned so far (e.g. at shutdown, or in tests); ``stats()``
    returns the counters.
    """

    def __init__(
        self, concurrency: int = 8, *, max_pending: int = 1000, name: str = "background"
    ) -> None:
        check.count(concurrency, "concurrency")
        check.count(max_pending, "max_pending", minimum=0)
        self.name = name
        self.concurrency = concurrency
        self.max_pending = max_pending
        self._sem: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._queued = 0  # spawned, waiting for a slot
        self._active = 0  # holding a slot
        label = (name if isinstance(name, str) and name else "background")[:128]
        self._count = {what: fam.attach(self, label) for what, fam in _TASKS.items()}
        _RUNNING.attach(self, label).set_function(_running(weakref.ref(self)))

    def spawn(
        self, coro: Coroutine[Any, Any, Any], *, decision: SampleDecision | None = None
    ) -> asyncio.Task[Any] | None:
        """Schedule ``coro``; returns its task, or ``None`` if it was dropped."""
        if not inspect.iscoroutine(coro):
            raise ConfigurationError(f"spawn() needs a coroutine object, got {coro!r}")
        if decision is not None and not decision.sampled:
            coro.close()
            return None
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.concurrency)
        if self._active + self._queued >= self.concurrency + self.max_pending:
            coro.close()
            self._count["dropped"].inc()
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning(
                    "%s: %d background task(s) dropped so far (%d running, %d waiting)",
                    self.name,
                    self.dropped,
                    self._active,
                    self._queued,
                )
            return None
        self._count["spawned"].inc()
        self._queued += 1
        task = asyncio.get_running_loop().create_task(self._run(coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run(self, coro: Coroutine[Any, Any, Any]) -> None:
        assert self._sem is not None
        try:
            await self._sem.acquire()
        except asyncio.CancelledError:
            coro.close()
            self._count["cancelled"].inc()
            raise
        finally:
            self._queued -= 1
        self._active += 1
        try:
            await coro
        except asyncio.CancelledError:
            self._count["cancelled"].inc()
            raise
        except Exception:
            self._count["failed"].inc()
            log.exception("%s: a background task failed", self.name)
        else:
            self._count["succeeded"].inc()
        finally:
            self._active -= 1
            self._sem.release()

    # the totals, read from its counters in the metrics registry
    @property
    def spawned(self) -> int:
        return int(self._count["spawned"].value)

    @property
    def succeeded(self) -> int:
        return int(self._count["succeeded"].value)

    @property
    def failed(self) -> int:
        return int(self._count["failed"].value)

    @property
    def dropped(self) -> int:
        return int(self._count["dropped"].value)

    @property
    def cancelled(self) -> int:
        return int(self._count["cancelled"].value)

    @property
    def running(self) -> int:
        """Tasks spawned and not finished (running or waiting for a slot)."""
        return len(self._tasks)

    async def drain(self) -> None:
        """Wait until every task spawned so far (and any they spawn) has finished."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def cancel(self) -> None:
        """Cancel every unfinished task and wait for them to end."""
        for t in list(self._tasks):
            t.cancel()
        await self.drain()

    def stats(self) -> TaskStats:
        """One frozen snapshot (the shape every primitive's ``stats()`` has)."""
        return TaskStats(
            spawned=self.spawned,
            succeeded=self.succeeded,
            failed=self.failed,
            dropped=self.dropped,
            cancelled=self.cancelled,
            running=self.running,
        )

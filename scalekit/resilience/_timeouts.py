"""Deadlines that nested calls inherit (contextvars), and per-attempt timeouts.

A deadline is an absolute time on a clock, kept in a :class:`contextvars.ContextVar`,
so it follows the call into nested functions, into tasks created inside it and
into :func:`timeout`'s offload threads. Entering a shorter deadline narrows it;
a longer one never extends it::

    with deadline(2.0):
        fetch()             # remaining() inside is <= 2.0, whatever fetch asks for

What can and cannot be interrupted
----------------------------------
An asyncio call is cancelled when its time is up (``asyncio.timeout``). A sync
call cannot be interrupted safely in Python: :func:`timeout` on a sync function
sets the deadline for the code inside (which can pass :func:`remaining` to its
socket timeouts) and refuses to start once the deadline has passed, but it does
not stop a call that overruns. ``offload=True`` runs the sync call in a worker
thread and stops *waiting* for it at the limit, raising ``DeadlineExceeded``; the
thread itself runs on until the call returns, and its result is dropped.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar, cast

from scalekit import _validate as check
from scalekit._clock import Clock, as_clock
from scalekit.errors import ConfigurationError, DeadlineExceeded
from scalekit.observability._metrics import default_registry as _metrics

__all__ = ["deadline", "remaining", "timeout"]

P = ParamSpec("P")
R = TypeVar("R")

# (absolute deadline, the clock's now function)
_DEADLINE: contextvars.ContextVar[tuple[float, Callable[[], float]] | None] = (
    contextvars.ContextVar("scalekit_deadline", default=None)
)


def remaining() -> float | None:
    """Seconds left before the current deadline (may be negative), or None without one."""
    current = _DEADLINE.get()
    if current is None:
        return None
    at, now = current
    return at - now()


def _narrowed(limit: float | None, now: Callable[[], float]) -> tuple[float, Callable[[], float]]:
    """The deadline ``limit`` seconds from now, never later than the current one."""
    left = remaining()
    if limit is None:
        assert left is not None
        limit = left
    elif left is not None:
        limit = min(limit, left)
    return now() + limit, now


@contextmanager
def deadline(
    seconds_: float | timedelta, *, clock: Clock | Callable[[], float] | None = None
) -> Iterator[None]:
    """Run the block under a deadline ``seconds_`` from now (or the enclosing one, if sooner).

    Works for sync code and inside coroutines alike (each task has its own context).
    """
    limit = check.duration(seconds_, "deadline", allow_zero=True)
    token = _DEADLINE.set(_narrowed(limit, as_clock(clock).now))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


_EXPIRED = _metrics.counter(
    "scalekit_timeout_expired_total",
    "Calls of a @timeout function that ran out of time (or started past the deadline).",
    labels=("function",),
)


def _expired(name: str, limit: float | None) -> DeadlineExceeded:
    if limit is None:
        return DeadlineExceeded(f"{name}: the deadline passed before the call started")
    return DeadlineExceeded(f"{name}: no result within {limit:.3g}s")


def timeout(
    seconds_: float | timedelta | None = None,
    *,
    offload: bool = False,
    clock: Clock | Callable[[], float] | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Limit each call to ``seconds_`` (and to the enclosing deadline, if sooner).

    ``seconds_=None`` applies only the enclosing :func:`deadline`. Async functions
    are cancelled at the limit and raise :class:`~scalekit.errors.DeadlineExceeded`
    (a ``TimeoutError``); sync functions: see the module documentation, and
    ``offload=True``.
    """
    limit = check.optional_duration(seconds_, "timeout")
    if not isinstance(offload, bool):
        raise ConfigurationError(f"offload must be a bool, got {offload!r}")
    now = as_clock(clock).now

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        name = getattr(fn, "__qualname__", repr(fn))
        expired_count = _EXPIRED.attach(fn, (name or "_")[:128]).inc

        def expired(limit: float | None) -> DeadlineExceeded:
            expired_count()
            return _expired(name, limit)

        if inspect.iscoroutinefunction(fn):
            if offload:
                raise ConfigurationError(
                    f"offload=True is for sync functions; {name} is async and is cancelled "
                    "at the limit without it"
                )
            afn = cast(Callable[P, Awaitable[Any]], fn)

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                if limit is None and _DEADLINE.get() is None:
                    return await afn(*args, **kwargs)
                at, clock_now = _narrowed(limit, now)
                left = at - clock_now()
                if left <= 0:
                    raise expired(None)
                token = _DEADLINE.set((at, clock_now))
                try:
                    async with asyncio.timeout(left) as cm:
                        return await afn(*args, **kwargs)
                except TimeoutError as exc:
                    if cm.expired():
                        raise expired(left) from exc
                    raise
                finally:
                    _DEADLINE.reset(token)

            return cast(Callable[P, R], async_wrapper)

        if offload:

            @functools.wraps(fn)
            def offload_wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                if limit is None and _DEADLINE.get() is None:
                    return fn(*args, **kwargs)
                at, clock_now = _narrowed(limit, now)
                left = at - clock_now()
                if left <= 0:
                    raise expired(None)
                token = _DEADLINE.set((at, clock_now))
                try:
                    ctx = contextvars.copy_context()
                finally:
                    _DEADLINE.reset(token)
                box: list[Any] = []
                done = threading.Event()

                def run() -> None:
                    try:
                        box.append((True, ctx.run(fn, *args, **kwargs)))
                    except BaseException as exc:
                        box.append((False, exc))
                    finally:
                        done.set()

                threading.Thread(target=run, name=f"scalekit-timeout:{name}", daemon=True).start()
                if not done.wait(left):
                    raise expired(left)
                ok, value = box[0]
                if ok:
                    return cast(R, value)
                raise value

            return offload_wrapper

        @functools.wraps(fn)
        def sync_wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            if limit is None and _DEADLINE.get() is None:
                return fn(*args, **kwargs)
            at, clock_now = _narrowed(limit, now)
            if at - clock_now() <= 0:
                raise expired(None)
            token = _DEADLINE.set((at, clock_now))
            try:
                return fn(*args, **kwargs)
            finally:
                _DEADLINE.reset(token)

        return sync_wrapper

    return decorate

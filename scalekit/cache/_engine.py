"""The fill engine's vocabulary and its two drivers (no cache state here).

A *flow* is a generator: it yields steps, ``("load", None)`` (run the loader),
``("sleep", seconds)`` or ``(method, args)`` (call the backend's ``method``, or its
``a``-prefixed twin in async code), receives ``(result, exception)`` (None for a
sleep), and returns its outcome. Everything else (freshness, fences, counting, the
guard) is decided in the flow, without I/O; :func:`run` and :func:`arun` only run
the steps (tenacity's ``iter()``, httpx's ``auth_flow``; ``sampling/pipeline.py``'s
``_walk`` in this library). The flows themselves are :class:`~scalekit.cache.Cache`
methods; this module holds the drivers, the records a fill carries and the pure
helpers that read entries.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar, cast

from scalekit._clock import Clock
from scalekit.cache._backend import CachedError, Entry, RemoteError
from scalekit.cache._freshness import EntryMeta, Freshness, classify_unchecked

if TYPE_CHECKING:
    from scalekit.cache._metrics import CacheCounters
    from scalekit.cache._options import CacheOptions

__all__ = ["Flow", "arun", "run"]

R = TypeVar("R")

#: a flow of the fill engine: yields ``(step, argument)``, receives the step's
#: ``(result, exception)``, returns its outcome
Flow: TypeAlias = Generator[tuple[str, Any], Any, R]


def run(flow: Flow[R], backend: object, loader: Callable[[], object] | None = None) -> R:
    """The sync driver: blocking backend calls, ``time.sleep``, ``loader()``. A
    ``BaseException`` of a step (``KeyboardInterrupt``, ...) is thrown into the flow,
    which may yield clean-up steps (give a lease back) before it propagates."""
    reply: Any = None
    abort: BaseException | None = None
    try:
        while True:
            if abort is None:
                op, arg = flow.send(reply)
            else:
                op, arg = flow.throw(abort)
                abort = None
            try:
                if op == "load":
                    result = cast("Callable[[], object]", loader)()
                elif op == "sleep":
                    time.sleep(arg)
                    result = None
                else:
                    result = getattr(backend, op)(*arg)
            except Exception as exc:
                reply = None, exc
            except BaseException as exc:
                abort = exc
            else:
                reply = result, None
    except StopIteration as stop:
        return cast(R, stop.value)
    finally:
        flow.close()


async def arun(
    flow: Flow[R], backend: object, loader: Callable[[], Awaitable[object]] | None = None
) -> R:
    """The async driver: awaited backend twins, ``asyncio.sleep``, ``await loader()``;
    a ``BaseException`` (a cancellation) is thrown into the flow, as in :func:`run`."""
    reply: Any = None
    abort: BaseException | None = None
    try:
        while True:
            if abort is None:
                op, arg = flow.send(reply)
            else:
                op, arg = flow.throw(abort)
                abort = None
            try:
                if op == "load":
                    result = await cast("Callable[[], Awaitable[object]]", loader)()
                elif op == "sleep":
                    await asyncio.sleep(arg)
                    result = None
                else:
                    result = await getattr(backend, "a" + op)(*arg)
            except Exception as exc:
                reply = None, exc
            except BaseException as exc:
                abort = exc
            else:
                reply = result, None
    except StopIteration as stop:
        return cast(R, stop.value)
    finally:
        flow.close()


class Fill:
    """A load in progress; the cache's own invalidations bump ``generation``.
    ``heads``: the namespace heads of a ``@cached`` key; ``hint``: the type values
    decode to; ``m``: the counters of the caller's namespace (its load is counted
    there)."""

    __slots__ = ("delta", "generation", "heads", "hint", "key", "m", "seq", "tags")

    def __init__(
        self,
        key: str,
        tags: frozenset[str],
        seq: int,
        heads: tuple[str, ...],
        hint: Any,
        m: CacheCounters,
    ) -> None:
        self.m = m
        self.key = key
        self.tags = tags
        self.seq = seq
        self.heads = heads
        self.hint = hint
        self.generation = 0
        self.delta = 0.0  # the load's duration, once it finished


class Fills:
    """The loads in progress of one cache: its in-process fence. Every invalidation
    of the cache voids the matching loads (bumps their ``generation``) under one
    lock; a load stores only if its generation is unchanged, checked under the
    same lock. A load that stores voids the older loads of its key (a waiter past
    ``lock_timeout`` that loaded by itself is not overwritten by the slower, older
    load). Only loads in progress are kept: bounded by concurrency."""

    __slots__ = ("clock", "lock", "running", "seq", "writes")

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self.running: set[Fill] = set()
        self.seq = 0
        self.writes = 0  # EntryMeta.generation: a per-cache write counter

    def open(
        self, key: str, tags: frozenset[str], heads: tuple[str, ...], hint: Any, m: CacheCounters
    ) -> Fill:
        """Register a load in progress, counted on ``m``."""
        with self.lock:
            self.seq += 1
            fill = Fill(key, tags, self.seq, heads, hint, m)
            self.running.add(fill)
            return fill

    def close(self, fill: Fill) -> None:
        with self.lock:
            self.running.discard(fill)

    def void(self, match: Callable[[Fill], bool]) -> None:
        """Void the matching loads in progress (an invalidation, a direct write)."""
        with self.lock:
            for fill in self.running:
                if match(fill):
                    fill.generation += 1

    def keep(self, fill: Fill, delta: float) -> bool:
        """A load finished: True if it may store (not voided); older loads of its
        key are voided."""
        with self.lock:
            if fill.generation:
                return False
            fill.delta = delta
            for other in self.running:
                if other.key == fill.key and other.seq < fill.seq:
                    other.generation += 1
            return True

    def meta(
        self, opts: CacheOptions, *, delta: float, negative: bool, fill: Fill | None = None
    ) -> EntryMeta | None:
        """The metadata of an entry written now (None if ``fill`` was voided)."""
        with self.lock:
            if fill is not None and fill.generation:
                return None
            now = self.clock.now()
            self.writes += 1
            if negative:
                return EntryMeta(stored_at=now, ttl=opts._neg, generation=self.writes)
            return EntryMeta(
                stored_at=now,
                ttl=opts._ttl,
                stale_while_revalidate=opts._swr,
                stale_if_error=opts._sie,
                delta=delta,
                generation=self.writes,
            )


class Outcome:
    """What a load gave: a value or an exception (with its traceback)."""

    __slots__ = ("error", "tb", "value")

    def __init__(self, value: object = None, error: BaseException | None = None) -> None:
        self.value = value
        self.error = error
        self.tb = None if error is None else error.__traceback__


#: a read that found nothing (one shared tuple, not a new one per miss)
MISSING: tuple[None, None] = (None, None)
#: a backend that failed or is cooling down
DOWN = object()
#: "nothing to store" (a load that must not be cached, or was voided)
NOTHING = object()
#: a margin no stored value outlives (a refresh without ``margin`` always loads)
FAR = 1e12
#: polling a lease another caller holds: first and longest pause (seconds)
POLL_FIRST = 0.001
POLL_MAX = 0.05


def fresh_outcome(entry: Entry, now: float) -> Outcome | None:
    """The outcome an entry stored by another load gives, if it is fresh at ``now``
    (beta 0: no early refresh; a cached exception is its error)."""
    if classify_unchecked(entry[1], now, 0.0, _no_draw) is not Freshness.FRESH:
        return None
    value = entry[0]
    if isinstance(value, CachedError):
        outcome = Outcome(error=value.error)
        outcome.tb = value.tb
        return outcome
    return Outcome(value)


def materialize(entry: Entry, exceptions: tuple[type[Exception], ...]) -> Entry | None:
    """A negative entry read from a remote backend, as an exception of one of
    ``exceptions`` (matched by module and qualified name; nothing is imported), or
    None (a miss) if none matches or it cannot be rebuilt."""
    remote = cast(RemoteError, entry[0])
    for cls in exceptions:
        if cls.__module__ == remote.module and cls.__qualname__ == remote.qualname:
            try:
                return CachedError(cls(*remote.args)), entry[1]
            except Exception:
                return None
    return None


def classified(
    entry: Entry,
    exceptions: tuple[type[Exception], ...],
    beta: float,
    now: float,
    draw: Callable[[], float],
) -> tuple[Entry | None, Freshness | None]:
    """A read entry and its state (a remote negative entry rebuilt as one of
    ``exceptions``, or a miss if none matches)."""
    if type(entry[0]) is RemoteError:
        rebuilt = materialize(entry, exceptions)
        if rebuilt is None:
            return MISSING
        entry = rebuilt
    return entry, classify_unchecked(entry[1], now, beta, draw)


def fresh_until(meta: EntryMeta) -> float:
    return meta.stored_at + meta.ttl


JSON_PLAIN = (str, int, float, bool, type(None))
MSGPACK_PLAIN = (*JSON_PLAIN, bytes)


def is_plain(value: object, plain: tuple[type, ...]) -> bool:
    """True if ``value`` is made of ``plain`` scalars, lists and str-keyed dicts
    only (what a JSON or msgpack round trip gives back as it was)."""
    stack = [value]
    while stack:
        v = stack.pop()
        t = type(v)
        if t in plain:
            continue
        if t is list:
            stack.extend(cast("list[object]", v))
        elif t is dict:
            d = cast("dict[object, object]", v)
            if any(type(k) is not str for k in d):
                return False
            stack.extend(d.values())
        else:
            return False
    return True


def no_entry(exc: BaseException | None) -> None:
    """A read on a failing or cooling-down backend: a miss."""
    return None


def unwrap(value: object) -> object:
    """A served value (a cached exception is re-raised)."""
    if isinstance(value, CachedError):
        value.reraise()
    return value


def _no_draw() -> float:  # pragma: no cover - never called with beta 0
    return 1.0

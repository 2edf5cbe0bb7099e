"""The cache's backend guard: what a failing call means in a flow, and the queue
of deferred invalidations.

:class:`CacheGuard` is the one :class:`~scalekit.backends._guard.BackendGuard` of a
cache, each failure also counted on the cache's ``backend_errors``. In the fill
engine's flows, reads and fills go through :func:`degrading` (a failing backend is
a miss: load, store nothing) and writes and invalidations through :func:`raising`
(a failure is counted and raised). With
``on_invalidation_error="defer"``, an invalidation the backend refused is queued
in a :class:`DeferredInvalidations`: a daemon thread applies the queue in order as
soon as the backend answers (retried with backoff), and until then the guard makes
reads skip the backend (they load, as when it is down), so nothing an invalidation
covers is served. Past ``max_deferred`` the queue collapses into one ``clear``
(correct, if costly). Logged once per outage.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from scalekit.backends._guard import BackendGuard
from scalekit.cache._engine import DOWN, Flow
from scalekit.cache._metrics import CacheCounters
from scalekit.errors import BackendDataError, BackendError
from scalekit.observability._metrics import Counter

__all__ = ["CacheGuard", "DeferredInvalidations", "degrading", "raising"]

log = logging.getLogger("scalekit.cache")


class CacheGuard(BackendGuard):
    """The backend guard, each failure also counted on the cache's counter; reads
    skip the backend while invalidations are deferred (nothing they cover is served)."""

    __slots__ = ("counter", "deferred")

    counter: Counter
    deferred: list[tuple[str, tuple[Any, ...]]]

    def skip(self) -> bool:
        return bool(self.deferred) or BackendGuard.skip(self)

    def success(self) -> None:
        if not self.deferred:  # recovered once the deferred invalidations are applied
            BackendGuard.success(self)

    def failure(self, exc: BaseException) -> None:
        self.counter.inc()
        super().failure(exc)


def raising(guard: CacheGuard, op: str, *args: Any) -> Flow[Any]:
    """A write or an invalidation: a backend failure is counted and raised."""
    result, exc = yield op, args
    if exc is None:
        guard.success()
        return result
    if isinstance(exc, BackendError):
        guard.failure(exc)
    raise exc


def degrading(guard: CacheGuard, op: str, *args: Any) -> Flow[Any]:
    """A backend call that degrades (reads and fills): ``DOWN`` if the backend is
    cooling down, fails (counted by the guard) or answers a data error about this
    key (the backend is healthy: load without storing); else its answer. (Not
    written as :func:`raising` plus a ``try``: every read of the direct API runs
    it, and a nested generator costs a tenth of a hit.)"""
    if guard.skip():
        return DOWN
    result, exc = yield op, args
    if exc is None:
        guard.success()
        return result
    if isinstance(exc, BackendError):
        guard.failure(exc)
        return DOWN
    if isinstance(exc, BackendDataError):
        guard.success()
        return DOWN
    raise exc


class DeferredInvalidations:
    """The invalidations a backend refused, applied in order by a retrier thread.

    :param backend: the cache's backend (``op`` names one of its sync methods).
    :param guard: the cache's guard (told of the recovery; counts retries' failures).
    :param counters: the counter set an invalidation ``(op, args)`` counts on (its
        ``invalidations`` once applied, its ``deferred`` once queued).
    :param pause: the first pause between two tries (doubles up to ``longest``).
    """

    def __init__(
        self,
        name: str,
        backend: Any,
        guard: CacheGuard,
        *,
        bound: int,
        counters: Callable[[str, tuple[Any, ...]], CacheCounters],
        pause: float,
        longest: float,
    ) -> None:
        self.name = name
        self.backend = backend
        self.guard = guard
        self.bound = bound
        self.counters = counters
        self.first = pause
        self.longest = max(longest, pause)
        self.queue: list[tuple[str, tuple[Any, ...]]] = []
        guard.deferred = self.queue
        self.done = threading.Condition(threading.Lock())
        self.retrier: threading.Thread | None = None

    def __len__(self) -> int:
        return len(self.queue)

    def add(self, op: str, args: tuple[Any, ...], exc: BackendError) -> None:
        """Queue an invalidation the backend refused; start the retrier if needed."""
        self.counters(op, args).deferred.inc()
        with self.done:
            queue = self.queue
            first = not queue
            if queue and queue[0][0] == "clear":
                pass  # a clear is queued: it covers this one
            elif len(queue) >= self.bound or op == "clear":
                queue[:] = [("clear", ())]
            else:
                queue.append((op, args))
            start = self.retrier is None
            if start:
                self.retrier = threading.Thread(
                    target=self._retry,
                    name=f"scalekit-cache-invalidations[{self.name}]",
                    daemon=True,
                )
        if first:
            log.warning(
                "cache %r: the backend failed (%s); invalidations are queued (at most %d) "
                "and applied when it answers; reads skip it until then",
                self.name,
                exc,
                self.bound,
            )
        if start:
            assert self.retrier is not None
            self.retrier.start()

    def _retry(self) -> None:
        """The retrier: applies the queue in order, backing off while the backend fails."""
        pause = self.first
        applied = 0
        while True:
            with self.done:
                if not self.queue:
                    self.retrier = None
                    self.guard.success()
                    self.done.notify_all()
                    break
                op, args = self.queue[0]
            try:
                getattr(self.backend, op)(*args)
            except BackendDataError:
                pass  # about one key's data: that key's problem, dropped
            except BackendError:
                self.guard.counter.inc()
                with self.done:
                    self.done.wait(pause)
                pause = min(pause * 2, self.longest)
                continue
            except Exception:  # never expected: do not spin on it
                log.exception("cache %r: a deferred %s failed; dropped", self.name, op)
            else:
                self.counters(op, args).invalidations.inc()
                applied += 1
            pause = self.first
            with self.done:
                if self.queue and self.queue[0] == (op, args):
                    del self.queue[0]
        log.warning(
            "cache %r: the backend answers; %d deferred invalidations applied", self.name, applied
        )

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until the queue is applied; True if nothing is left."""
        with self.done:
            return self.done.wait_for(lambda: not self.queue, timeout)

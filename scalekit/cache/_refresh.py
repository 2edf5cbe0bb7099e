"""Scheduled refresh-ahead: values a job keeps fresh so that readers never compute them.

The trending list that takes seconds to compute, the provider configuration every
request reads: a :class:`RefreshAhead` job recomputes the value ``refresh_ahead``
seconds before it expires and stores it; readers only ever read
(``cache.get(key)``, or ``cache.get_or_load(key, loader)`` as a cold-start fallback).

- One job per key and process; on a remote backend every process may run the job:
  :meth:`Cache.refresh <scalekit.cache._core.Cache.refresh>` loads only when the
  stored value is due and this process wins the key's lease, so the fleet computes
  each period once.
- The schedule follows the stored entry (its ``stored_at + ttl - refresh_ahead``),
  not a local timer: a value refreshed by another process pushes this process'
  next run back.
- A failing loader is logged (WARNING once per episode, then DEBUG) and counted in
  ``errors``; the job retries after ``retry_after`` seconds, while the old value
  stays served until its TTL (give the entries a ``stale_if_error`` window to ride
  out longer outages).
- Time is the cache's clock: with :class:`~scalekit.testing.FakeClock` the loop
  advances fake time instead of sleeping, and tests can drive :meth:`run_pending`
  directly.

Threads: :meth:`start` runs the loop in a daemon thread, :meth:`stop` ends it.
asyncio: :meth:`run` is the loop as a coroutine (``asyncio.create_task(job.run())``;
cancel the task to stop it), :meth:`arun_pending` one step.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from typing import Any

from scalekit._clock import MonotonicClock
from scalekit.cache._core import Cache, CacheOptions
from scalekit.cache._freshness import _duration
from scalekit.errors import ConfigurationError

__all__ = ["RefreshAhead"]

log = logging.getLogger("scalekit.cache")


def _seconds(value: float | timedelta, what: str) -> float:
    """A duration (see :func:`~scalekit.cache._freshness._duration`) that must be > 0."""
    seconds = _duration(value, what)
    if seconds == 0:
        raise ConfigurationError(f"{what} must be a finite duration > 0 seconds, got {value!r}")
    return seconds


class RefreshAhead:
    """Keep ``key`` of ``cache`` fresh with ``loader``, ``refresh_ahead`` seconds
    before each expiry. See the module docstring.

    :param loader: a zero-argument callable; a coroutine function for :meth:`run` /
        :meth:`arun_pending`, a plain one for :meth:`start` / :meth:`run_pending`.
    :param ttl: how long each computed value is fresh (> ``refresh_ahead``).
    :param refresh_ahead: how long before expiry the next computation starts; at
        least the loader's duration, so readers never see the value expire.
    :param retry_after: the pause after a failed load (default: ``refresh_ahead / 4``).
    :param options: further entry options (stale windows); ``ttl`` here wins.
    """

    def __init__(
        self,
        cache: Cache,
        key: str,
        loader: Callable[[], Any],
        *,
        ttl: float | timedelta,
        refresh_ahead: float | timedelta,
        tags: Iterable[str] = (),
        retry_after: float | timedelta | None = None,
        options: CacheOptions | None = None,
        type_hint: Any = None,
        name: str | None = None,
    ) -> None:
        if not isinstance(cache, Cache):
            raise ConfigurationError(f"cache must be a Cache, got {cache!r}")
        if not isinstance(key, str) or not key:
            raise ConfigurationError(f"key must be a non-empty str, got {key!r}")
        if not callable(loader):
            raise ConfigurationError(f"loader must be callable, got {loader!r}")
        ttl_s = _seconds(ttl, "ttl")
        ahead = _seconds(refresh_ahead, "refresh_ahead")
        if ahead >= ttl_s:
            raise ConfigurationError(
                f"refresh_ahead ({ahead:g} s) must be shorter than ttl ({ttl_s:g} s): "
                f"the value would be recomputed continuously"
            )
        base = options or cache.options
        self.cache = cache
        self.key = key
        self.loader = loader
        self.refresh_ahead = ahead
        self.retry_after = (
            ahead / 4 if retry_after is None else _seconds(retry_after, "retry_after")
        )
        self.options = CacheOptions(
            ttl=ttl_s,
            stale_while_revalidate=base.stale_while_revalidate,
            stale_if_error=base.stale_if_error,
            beta=0.0,  # the schedule decides; no XFetch on top
            lock_timeout=base.lock_timeout,
        )
        self.tags = tuple(tags)
        self.type_hint = type_hint
        self.name = name or key
        #: loads this job ran, and the failed ones
        self.loads = 0
        self.errors = 0
        self._failing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"RefreshAhead({self.name!r}, every ttl - {self.refresh_ahead:g} s)"

    # --- one step ------------------------------------------------------------------------

    def run_pending(self) -> float:
        """Refresh now if due; returns the seconds until the next step is due."""
        try:
            ran = self.cache.refresh(
                self.key,
                self.loader,
                tags=self.tags,
                options=self.options,
                type_hint=self.type_hint,
                margin=self.refresh_ahead,
            )
        except Exception as exc:
            self._failed(exc)
            return self.retry_after
        self._succeeded(ran)
        return self._next_in()

    async def arun_pending(self) -> float:
        """:meth:`run_pending` for a coroutine ``loader``."""
        loader: Callable[[], Awaitable[object]] = self.loader
        try:
            ran = await self.cache.arefresh(
                self.key,
                loader,
                tags=self.tags,
                options=self.options,
                type_hint=self.type_hint,
                margin=self.refresh_ahead,
            )
        except Exception as exc:
            self._failed(exc)
            return self.retry_after
        self._succeeded(ran)
        return await self._anext_in()

    def _succeeded(self, ran: bool) -> None:
        if ran:
            self.loads += 1
        if self._failing:
            self._failing = False
            log.warning("refresh-ahead %r: loader recovered", self.name)

    def _failed(self, exc: Exception) -> None:
        self.errors += 1
        (log.debug if self._failing else log.warning)(
            "refresh-ahead %r: loader failed (%r); retrying every %.3gs",
            self.name,
            exc,
            self.retry_after,
        )
        self._failing = True

    def _wait_for(self, meta_end: float | None) -> float:
        if meta_end is None:  # nothing stored (backend down, or not storable): retry
            return self.retry_after
        due = meta_end - self.refresh_ahead - self.cache._clock.now()
        return max(due, 0.0)

    def _next_in(self) -> float:
        entry = self.cache._run(self.cache._read(self.key, self.type_hint))
        return self._wait_for(None if entry is None else entry[1].stored_at + entry[1].ttl)

    async def _anext_in(self) -> float:
        entry = await self.cache._arun(self.cache._read(self.key, self.type_hint))
        return self._wait_for(None if entry is None else entry[1].stored_at + entry[1].ttl)

    # --- loops ---------------------------------------------------------------------------

    def start(self) -> threading.Thread:
        """Run the job in a daemon thread until :meth:`stop`."""
        if self._thread is not None and self._thread.is_alive():
            raise ConfigurationError(f"{self!r} is already running")
        self._stop.clear()
        real = isinstance(self.cache._clock, MonotonicClock)
        clock = self.cache._clock

        def loop() -> None:
            while not self._stop.is_set():
                delay = self.run_pending()
                if real:
                    self._stop.wait(delay)
                else:  # an injected clock (tests) decides what waiting means
                    clock.sleep(delay)

        self._thread = threading.Thread(
            target=loop, name=f"scalekit-refresh-ahead[{self.name}]", daemon=True
        )
        self._thread.start()
        return self._thread

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the thread started by :meth:`start`; True once it ended."""
        self._stop.set()
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    async def run(self) -> None:
        """The job as a coroutine: ``task = asyncio.create_task(job.run())``;
        ``task.cancel()`` stops it."""
        clock = self.cache._clock
        me = asyncio.current_task()
        while True:
            # a driver that swallowed our cancellation (Python 3.11's wait_for can,
            # when its inner future completes at the same moment) must not keep
            # the job alive: cancel() has been asked for, so stop
            if me is not None and me.cancelling():
                raise asyncio.CancelledError
            delay = await self.arun_pending()
            await clock.asleep(delay)
            await asyncio.sleep(0)  # a scheduling point even when delay is 0

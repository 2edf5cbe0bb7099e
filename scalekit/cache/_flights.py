"""Single-flight in one process: one load per key, for threads and for asyncio tasks.

The one place where threads and tasks really differ, so the one place with two
shapes; both run the same fill flow with their driver (:mod:`scalekit.cache._engine`).

- Threads: the first caller of a key runs the load itself; the others wait on a
  :class:`threading.Event`, at most ``wait`` seconds of *real* time (a bound against
  a hung loader), then load by themselves without the lease. If the leading thread
  dies with a ``BaseException``, waiters are released and retry.
- Tasks: the load runs as its own task per event loop; every caller (the one that
  started it included) awaits it through :func:`asyncio.shield`, so cancelling a
  caller cancels only that caller's wait: the load goes on, stores its value and
  answers the others. A waiter past ``wait`` loads by itself.
- Background refreshes use the same flights (a daemon thread, or a task kept
  referenced until it ends): a caller that arrives during a refresh waits for it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

from scalekit.cache._engine import Flow, Outcome, arun, run
from scalekit.observability._metrics import Counter

__all__ = ["SingleFlight"]

#: a fill flow to start: with the lease (True), or without (a waiter past its wait)
Start = Callable[[bool], Flow[Outcome]]


class _SyncFlight:
    __slots__ = ("abandoned", "done", "outcome")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.outcome: Outcome | None = None
        self.abandoned = False


class SingleFlight:
    """The loads in progress of one cache, per key (see the module docstring).

    :param backend: what the flows' steps call (with :func:`run` / :func:`arun`).

    ``load`` / ``aload`` take the counter of the caller's namespace (``coalesced``),
    counted once per caller that waited for another's load.
    """

    def __init__(self, name: str, backend: object) -> None:
        self.name = name
        self.backend = backend
        self.lock = threading.Lock()
        self.flights: dict[str, _SyncFlight] = {}
        self.by_loop: dict[tuple[asyncio.AbstractEventLoop, str], asyncio.Task[Outcome]] = {}
        self.tasks: set[asyncio.Task[Outcome]] = set()
        self.threads: set[threading.Thread] = set()

    # --- threads ---------------------------------------------------------------------

    def load(
        self,
        key: str,
        start: Start,
        loader: Callable[[], object],
        wait: float | None,
        coalesced: Counter,
    ) -> Outcome:
        """The outcome of this process' load of ``key``: led here, or waited for."""
        waited = False
        while True:
            with self.lock:
                flight = self.flights.get(key)
                leader = flight is None
                if flight is None:
                    flight = self.flights[key] = _SyncFlight()
            if leader:
                return self._lead(flight, key, start(True), loader)
            if not waited:
                waited = True
                coalesced.inc()
            if not flight.done.wait(wait):
                return run(start(False), self.backend, loader)
            if flight.abandoned or flight.outcome is None:
                continue  # the leader died: retry
            return flight.outcome

    def spawn(self, key: str, start: Start, loader: Callable[[], object]) -> None:
        """A background load of ``key`` in a daemon thread, unless one runs."""
        with self.lock:
            if key in self.flights:
                return  # a load of this key is already running: that is the refresh
            flight = self.flights[key] = _SyncFlight()

        def refresh() -> None:
            try:
                self._lead(flight, key, start(True), loader)
            finally:
                with self.lock:
                    self.threads.discard(thread)

        thread = threading.Thread(
            target=refresh, name=f"scalekit-cache-refresh[{self.name}]", daemon=True
        )
        with self.lock:
            self.threads.add(thread)
        thread.start()

    def _lead(
        self, flight: _SyncFlight, key: str, flow: Flow[Outcome], loader: Callable[[], object]
    ) -> Outcome:
        try:
            outcome = run(flow, self.backend, loader)
        except BaseException:
            flight.abandoned = True
            raise
        else:
            flight.outcome = outcome
            return outcome
        finally:
            with self.lock:
                if self.flights.get(key) is flight:
                    del self.flights[key]
            flight.done.set()

    def drain(self, timeout: float | None = None) -> bool:
        """Wait for the background threads started so far; True if all ended."""
        with self.lock:
            threads = list(self.threads)
        for t in threads:
            t.join(timeout)
        return not any(t.is_alive() for t in threads)

    # --- tasks -------------------------------------------------------------------------

    async def aload(
        self,
        key: str,
        start: Start,
        loader: Callable[[], Awaitable[object]],
        wait: float | None,
        coalesced: Counter,
    ) -> Outcome:
        """The outcome of this loop's load task of ``key``: started here, or joined."""
        task, leader = self.task(key, start, loader)
        if leader:
            return await asyncio.shield(task)
        coalesced.inc()
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow
            # this caller's cancellation when the load ends at the same moment
            async with asyncio.timeout(wait):
                return await asyncio.shield(task)
        except TimeoutError:
            return await arun(start(False), self.backend, loader)

    def task(
        self, key: str, start: Start, loader: Callable[[], Awaitable[object]]
    ) -> tuple[asyncio.Task[Outcome], bool]:
        """The load task of ``key`` on this loop, started if none runs; True if started."""
        loop = asyncio.get_running_loop()
        fkey = (loop, key)
        with self.lock:
            task = self.by_loop.get(fkey)
            if task is not None:
                return task, False
            task = loop.create_task(arun(start(True), self.backend, loader))
            self.by_loop[fkey] = task
            self.tasks.add(task)

        def done(t: asyncio.Task[Outcome]) -> None:
            with self.lock:
                if self.by_loop.get(fkey) is t:
                    del self.by_loop[fkey]
                self.tasks.discard(t)
            if not t.cancelled():
                t.exception()  # retrieved: no "never retrieved" warning

        task.add_done_callback(done)
        return task, True

    async def adrain(self) -> None:
        """Wait for the background tasks of the running loop started so far."""
        loop = asyncio.get_running_loop()
        with self.lock:
            tasks = [t for t in self.tasks if t.get_loop() is loop]
        if tasks:
            await asyncio.wait(tasks)

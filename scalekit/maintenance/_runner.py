"""The runner: a job every interval, under a PostgreSQL advisory lock."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from scalekit import _validate
from scalekit._clock import Clock, as_clock
from scalekit.errors import ConfigurationError
from scalekit.maintenance._db import connection, is_pool
from scalekit.observability._metrics import default_registry as _metrics

__all__ = ["MaintenanceStats", "Runner", "lock_key", "run_every"]

log = logging.getLogger("scalekit.maintenance")

LockMode = Literal["session", "transaction"]
Job = Callable[[Any], Awaitable[object]]


_RUNS = _metrics.counter(
    "scalekit_maintenance_runs_total",
    "Rounds of a job, by outcome: done, skipped (locked elsewhere), failed.",
    labels=("job", "outcome"),
)


def lock_key(name: str) -> int:
    """The advisory lock key (a signed 64-bit int) for a job's name."""
    digest = hashlib.blake2b(f"scalekit.maintenance:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclass(frozen=True, slots=True)
class MaintenanceStats:
    """What a :class:`Runner` has done since it was created."""

    #: the job's name (and its lock's)
    job: str
    #: runs that held the lock and finished
    runs: int
    #: rounds skipped because another worker held the lock
    skipped: int
    #: runs that raised
    failures: int
    #: rows deleted or moved, summed over the runs' results
    rows: int
    #: batches committed, summed over the runs' results
    batches: int
    #: seconds the longest batch of any run took
    longest_batch: float
    #: ``repr`` of the last error, ``None`` until one happens
    last_error: str | None


def _job_name(job: Job) -> str:
    name = getattr(job, "job_name", None)
    if isinstance(name, str):
        return name
    return f"{getattr(job, '__module__', '?')}.{getattr(job, '__qualname__', repr(job))}"


class Runner:
    """Run ``job(pool)`` under an advisory lock, once (:meth:`run_once`) or every
    ``interval`` seconds (:meth:`start` / :func:`run_every`).

    ``lock="session"`` takes ``pg_try_advisory_lock`` on a connection held for the
    run: if that connection is lost, the server releases the lock and the runner
    cancels the job. ``lock="transaction"`` takes ``pg_try_advisory_xact_lock``
    inside a transaction kept open for the run instead, which is what works through
    PgBouncer in transaction mode (a session lock there would stay on whichever
    server connection ran it); it needs a pool, since the job runs its own
    transactions on other connections.
    """

    def __init__(
        self,
        job: Job,
        interval: float | timedelta,
        *,
        pool: Any,
        name: str | None = None,
        lock: LockMode = "session",
        clock: Clock | Callable[[], float] | None = None,
    ) -> None:
        if not callable(job):
            raise ConfigurationError(f"job must be an async callable taking the pool, got {job!r}")
        self.interval = _validate.duration(interval, "interval")
        if lock not in ("session", "transaction"):
            raise ConfigurationError(f"lock must be 'session' or 'transaction', got {lock!r}")
        if lock == "transaction" and not is_pool(pool):
            raise ConfigurationError(
                "lock='transaction' needs a pool: the lock's transaction stays open on one "
                "connection while the job commits its batches on others"
            )
        if pool is None:
            raise ConfigurationError("pool= is required (a PgPool, asyncpg pool or connection)")
        self.job = job
        self.pool = pool
        self.name = _validate.name(name if name is not None else _job_name(job), "name")
        self.lock = lock
        self.key = lock_key(self.name)
        self._clock = as_clock(clock)
        self._task: asyncio.Task[None] | None = None
        label = self.name[:128]
        self._runs = _RUNS.attach(self, label, "done")
        self._skipped = _RUNS.attach(self, label, "skipped")
        self._failures = _RUNS.attach(self, label, "failed")
        self._rows = self._batches = 0
        self._longest = 0.0
        self._last_error: str | None = None

    def __repr__(self) -> str:
        return f"Runner({self.name!r}, every {self.interval}s, lock={self.lock!r})"

    def stats(self) -> MaintenanceStats:
        return MaintenanceStats(
            job=self.name,
            runs=int(self._runs.value),
            skipped=int(self._skipped.value),
            failures=int(self._failures.value),
            rows=self._rows,
            batches=self._batches,
            longest_batch=self._longest,
            last_error=self._last_error,
        )

    async def run_once(self) -> bool:
        """Run the job if no other worker holds its lock: ``True`` if it ran, ``False``
        if the lock was held elsewhere. An exception (the job's, or the lock
        connection's) propagates and is recorded in :meth:`stats`."""
        try:
            return await self._locked_run()
        except Exception as exc:
            self._failures.inc()
            self._last_error = repr(exc)
            log.warning("%s failed: %r", self.name, exc)
            raise

    async def _locked_run(self) -> bool:
        async with connection(self.pool) as con:
            if self.lock == "transaction":
                tx = con.transaction()
                await tx.start()
                try:
                    if not await con.fetchval("SELECT pg_try_advisory_xact_lock($1)", self.key):
                        self._skipped.inc()
                        return False
                    await self._run_guarded(con)
                    return True
                finally:
                    # ending the transaction releases the lock (nothing to commit);
                    # on a lost connection the server has released it already
                    try:
                        await tx.rollback()
                    except Exception as exc:
                        log.debug("%s: rollback skipped (%r)", self.name, exc)
            if not await con.fetchval("SELECT pg_try_advisory_lock($1)", self.key):
                self._skipped.inc()
                return False
            try:
                await self._run_guarded(con)
            finally:
                await self._unlock(con)
            return True

    async def _unlock(self, con: Any) -> None:
        # A lost connection released the lock on the server already (and asyncpg's
        # pool has taken the dead connection back); a pool's reset also unlocks.
        try:
            if not con.is_closed():
                await asyncio.shield(con.execute("SELECT pg_advisory_unlock($1)", self.key))
        except Exception as exc:
            log.debug("%s: unlock skipped (%r); the connection is gone", self.name, exc)

    async def _run_guarded(self, lock_con: Any) -> None:
        """Run the job; cancel it if the connection holding the lock is lost."""
        task = asyncio.ensure_future(self.job(self.pool))
        lost = False

        def on_lost(_con: Any) -> None:
            nonlocal lost
            lost = True
            task.cancel()

        listen = getattr(lock_con, "add_termination_listener", None)
        if listen is not None:
            listen(on_lost)
        try:
            result = await task
        except asyncio.CancelledError:
            if lost:
                raise ConnectionError(
                    "the connection holding the lock was lost; job cancelled"
                ) from None
            raise
        finally:
            task.cancel()
            remove = getattr(lock_con, "remove_termination_listener", None)
            if remove is not None and not lost:
                remove(on_lost)
        self._runs.inc()
        rows = getattr(result, "rows", None)
        batches = getattr(result, "batches", None)
        longest = getattr(result, "longest_batch", None)
        if isinstance(rows, int):
            self._rows += rows
        if isinstance(batches, int):
            self._batches += batches
        if isinstance(longest, float):
            self._longest = max(self._longest, longest)
        log.info("%s: run %d done (%r)", self.name, int(self._runs.value), result)

    async def _forever(self) -> None:
        while True:
            started = self._clock.now()
            try:
                await self.run_once()
            except Exception:  # recorded in stats and logged; the next round tries again
                pass
            await self._clock.asleep(max(0.0, self.interval - (self._clock.now() - started)))

    def start(self) -> Runner:
        """Run every ``interval`` in a task of the running loop (``stop()`` ends it)."""
        if self._task is not None and not self._task.done():
            raise ConfigurationError(f"{self!r} is already running")
        self._task = asyncio.get_running_loop().create_task(
            self._forever(), name=f"scalekit.maintenance:{self.name}"
        )
        return self

    async def stop(self) -> None:
        """Cancel the loop (and a run in progress, whose batch rolls back) and wait."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            if not task.cancelled():
                raise
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise


def run_every(
    job: Job,
    interval: float | timedelta,
    *,
    pool: Any,
    name: str | None = None,
    lock: LockMode = "session",
    clock: Clock | Callable[[], float] | None = None,
) -> Runner:
    """Start a :class:`Runner` running ``job(pool)`` every ``interval`` (seconds or a
    ``timedelta``) in the running event loop, one worker of the fleet at a time.
    Keep the returned runner: ``runner.stats()``, ``await runner.stop()``."""
    return Runner(job, interval, pool=pool, name=name, lock=lock, clock=clock).start()

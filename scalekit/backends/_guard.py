"""Backend health shared by every primitive: a cooldown after a failure, one probe at a time.

A primitive that talks to Redis (rate limiter, cache, breaker state, budget) runs
each backend call through :meth:`BackendGuard.call` / :meth:`BackendGuard.acall`
with the degraded answer to give instead: while cooling down the backend is not
called at all; a :class:`~scalekit.errors.BackendError` (a connection failure,
timeout, server outage) starts or extends a cooldown. An outage therefore costs one
short socket timeout, not one per call, and is logged once when it starts and once
when it ends.

A :class:`~scalekit.errors.BackendDataError` (the server answered, with an error
about one key's data) proves the backend healthy: it passes through the guard to
the primitive, which resets or misses that key, and never trips the guard.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

from scalekit.errors import BackendDataError, BackendError
from scalekit.observability._events import log_event

__all__ = ["BackendGuard"]

T = TypeVar("T")

log = logging.getLogger("scalekit.backends")


class BackendGuard:
    """Backend health for one limiter: cooldown after a failure, one probe at a time.

    While healthy the hot path reads one attribute. After a failure, calls skip the
    backend for ``cooldown`` seconds (no timeout added to them); then one call
    probes it. Each outage episode is logged once when it starts and once when it
    ends (also as the ``backend.down`` / ``backend.up`` events), and counted.
    """

    __slots__ = (
        "_cooldown",
        "_corrupt_logged",
        "_lock",
        "_log",
        "_now",
        "_since",
        "_until",
        "corrupt",
        "episodes",
        "errors",
        "kind",
        "name",
    )

    def __init__(
        self,
        name: str,
        cooldown: float,
        now: Callable[[], float],
        kind: str = "rate limiter",
        logger: logging.Logger | None = None,
    ) -> None:
        self._log = logger or log
        self.name = name
        self.kind = kind
        self._cooldown = cooldown
        self._now = now
        self._lock = threading.Lock()
        self._until: float | None = None  # None: healthy
        self._since = 0.0  # when the current outage started
        self.errors = 0
        self.episodes = 0
        self.corrupt = 0  # data errors answered by resetting the state (see call)
        self._corrupt_logged: float | None = None

    def skip(self) -> bool:
        """True if the backend must not be called now (cooling down)."""
        if self._until is None:
            return False
        with self._lock:
            if self._until is None:
                return False
            now = self._now()
            if now < self._until:
                return True
            self._until = now + self._cooldown  # this caller probes; others keep skipping
            return False

    def retry_in(self) -> float:
        until = self._until
        return max(0.0, until - self._now()) if until is not None else 0.0

    def failure(self, exc: BaseException) -> None:
        with self._lock:
            self.errors += 1
            if self._until is None:
                self.episodes += 1
                self._log.warning(
                    "%s %r: backend failed (%s); applying the failure policy "
                    "and probing again every %.3gs",
                    self.kind,
                    self.name,
                    exc,
                    self._cooldown,
                )
                self._since = self._now()
                log_event(
                    "backend.down",
                    primitive=self.kind,
                    primitive_name=self.name,
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in=self._cooldown,
                )
            self._until = self._now() + self._cooldown

    def success(self) -> None:
        if self._until is not None:
            with self._lock:
                if self._until is not None:
                    self._until = None
                    self._log.warning("%s %r: backend recovered", self.kind, self.name)
                    log_event(
                        "backend.up",
                        primitive=self.kind,
                        primitive_name=self.name,
                        down_seconds=round(max(0.0, self._now() - self._since), 6),
                    )

    # -- the one guarded call -----------------------------------------------------------
    def call(
        self,
        fn: Callable[[], T],
        degrade: Callable[[BackendError | None], T],
        reset: Callable[[BackendDataError], object] | None = None,
    ) -> T:
        """``fn()``; or ``degrade(exc)`` if it raises :class:`BackendError`, or
        ``degrade(None)`` without calling it while cooling down.

        A :class:`BackendDataError` marks the backend healthy. Without ``reset`` it
        propagates (the primitive handles that key itself). With ``reset(exc)`` (which
        deletes the state the data error was about), the state is reset, counted in
        :attr:`corrupt`, logged at most once per cooldown, and ``fn()`` runs again from
        the clean state; a second data error in a row answers ``degrade(None)`` for
        this call (the state is being corrupted as fast as it is reset). Either way
        the guard never trips: a key's data is never the backend's outage.
        """
        if self._until is not None and self.skip():
            return degrade(None)
        try:
            result = fn()
        except BackendError as exc:
            self.failure(exc)
            return degrade(exc)
        except BackendDataError as exc:
            self.success()
            if reset is None:
                raise
            self._corrupted(exc)
            try:
                reset(exc)
                result = fn()
            except BackendError as again:
                self.failure(again)
                return degrade(again)
            except BackendDataError:
                return degrade(None)
        if self._until is not None:
            self.success()
        return result

    async def acall(
        self,
        fn: Callable[[], Awaitable[T]],
        degrade: Callable[[BackendError | None], T],
        reset: Callable[[BackendDataError], Awaitable[object]] | None = None,
    ) -> T:
        """The async twin of :meth:`call` (``fn`` and ``reset`` return awaitables)."""
        if self._until is not None and self.skip():
            return degrade(None)
        try:
            result = await fn()
        except BackendError as exc:
            self.failure(exc)
            return degrade(exc)
        except BackendDataError as exc:
            self.success()
            if reset is None:
                raise
            self._corrupted(exc)
            try:
                await reset(exc)
                result = await fn()
            except BackendError as again:
                self.failure(again)
                return degrade(again)
            except BackendDataError:
                return degrade(None)
        if self._until is not None:
            self.success()
        return result

    def _corrupted(self, exc: BackendDataError) -> None:
        with self._lock:
            self.corrupt += 1
            now = self._now()
            last = self._corrupt_logged
            if last is not None and now - last < self._cooldown:
                return
            self._corrupt_logged = now
        self._log.warning(
            "%s %r: its state in the backend is not what it expects (%s); resetting it",
            self.kind,
            self.name,
            exc,
        )

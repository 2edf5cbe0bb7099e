"""Backend health shared by every primitive: a cooldown after a failure, one probe at a time.

A primitive that talks to Redis (rate limiter, cache, breaker state) wraps each
backend call: ``if guard.skip(): <degrade>``; on error ``guard.failure(exc)`` then
degrade; on success ``guard.success()``. An outage therefore costs one short socket
timeout, not one per call, and is logged once when it starts and once when it ends.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

__all__ = ["BackendGuard"]

log = logging.getLogger("scalekit.backends")


class BackendGuard:
    """Backend health for one limiter: cooldown after a failure, one probe at a time.

    While healthy the hot path reads one attribute. After a failure, calls skip the
    backend for ``cooldown`` seconds (no timeout added to them); then one call
    probes it. Each outage episode is logged once when it starts and once when it
    ends, and counted.
    """

    __slots__ = (
        "_cooldown",
        "_lock",
        "_log",
        "_now",
        "_until",
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
        self.errors = 0
        self.episodes = 0

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
            self._until = self._now() + self._cooldown

    def success(self) -> None:
        if self._until is not None:
            with self._lock:
                if self._until is not None:
                    self._until = None
                    self._log.warning("%s %r: backend recovered", self.kind, self.name)

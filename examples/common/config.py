"""The configuration every example service takes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from scalekit import Clock


@dataclass(frozen=True, kw_only=True, slots=True)
class ServiceConfig:
    """How an example service is wired.

    ``database_url``: a ``postgresql://`` DSN (asyncpg through ``scalekit.pools``).
    ``redis_url``: where limits, caches and budgets live; ``None`` keeps them in
    process (``memory://``). ``primitives``: ``False`` builds the same service with
    every scalekit primitive switched off, the baseline the demo measures against.
    ``clock``: the time-based primitives' clock (a :class:`scalekit.Clock` such as
    :class:`scalekit.testing.FakeClock` in tests, or a function returning seconds).
    ``cursor_secret``: signs pagination cursors (every process serving the same pages
    needs the same one).
    """

    database_url: str
    redis_url: str | None = None
    primitives: bool = True
    clock: Clock | Callable[[], float] | None = None
    cursor_secret: str = "example-secret-change-me-0123456789abcdef"
    pool_size: int = 10

    @property
    def backend_url(self) -> str:
        """The backend URL the primitives use: ``redis_url`` or ``memory://``."""
        return self.redis_url or "memory://"

"""The startup check of the limiters: ``ping()`` answers only when the backend does.

A limiter on Redis follows its failure policy when Redis is down, which at boot means
an app that never reached its Redis runs on ``fail_open`` silently. ``ping`` is the
check an app runs once, at startup, to refuse to boot instead (see
:func:`scalekit.ratelimit.fastapi.lifespan_check`). It bypasses the backend guard: a
cooldown must not hide an unreachable server from the one call asking about it.
"""

from __future__ import annotations

from scalekit.backends._redis import RedisBackend
from scalekit.errors import BackendError

__all__ = ["aping", "ping"]


def _unreachable(what: str, backend: RedisBackend, exc: BackendError) -> BackendError:
    return BackendError(
        f"{what}: Redis at {backend!r} is not reachable ({exc}); check the URL, the "
        "network and the server, or use a memory:// backend"
    )


def ping(what: str, backend: object) -> None:
    """Raise :class:`BackendError` (naming the redacted URL) unless ``backend`` answers."""
    if isinstance(backend, RedisBackend):
        try:
            backend.execute("PING")
        except BackendError as exc:
            raise _unreachable(what, backend, exc) from exc


async def aping(what: str, backend: object) -> None:
    """The asyncio twin of :func:`ping` (this loop's client)."""
    if isinstance(backend, RedisBackend):
        try:
            await backend.aexecute("PING")
        except BackendError as exc:
            raise _unreachable(what, backend, exc) from exc

"""The one place where Redis driver errors become scalekit errors.

Every call to Redis runs inside :func:`map_redis_errors` (a ``with`` block, after
httpx's ``map_httpcore_exceptions``). It sorts driver failures into two kinds:

- **the backend's problem** -> :class:`~scalekit.errors.BackendError`: the
  connection failed, timed out or was refused, the server is loading, read-only,
  out of memory, busy with a script, or the cluster is down. These trip a
  primitive's :class:`~scalekit.backends._guard.BackendGuard` and its failure policy.
- **one key's problem** -> :class:`~scalekit.errors.BackendDataError`: the server
  answered with an error about the data (``WRONGTYPE``, a Lua script failing on a
  value it cannot parse, "value is not an integer"). These never trip the guard;
  the primitive resets or misses that key.

``NOSCRIPT`` is not mapped: the caller loads the script and retries.
:class:`~scalekit.errors.PoolExhausted` (no connection of the bounded pool became
free in time) is the backend's problem too: it becomes a ``BackendError``.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Literal

from scalekit.errors import BackendDataError, BackendError, PoolExhausted

__all__ = ["classify_redis_error", "map_redis_errors"]

#: error-reply prefixes (the first word of a ``-ERR``-style reply) that describe the
#: server's state, not the data of a key: an outage for every key alike
_OUTAGE_PREFIXES = frozenset(
    {
        "BUSY",  # a script runs too long
        "LOADING",
        "READONLY",
        "MASTERDOWN",
        "NOAUTH",
        "WRONGPASS",
        "NOPERM",
        "OOM",
        "CLUSTERDOWN",
        "TRYAGAIN",
        "MOVED",
        "ASK",
        "CROSSSLOT",
        "NOREPLICAS",
        "MISCONF",
        "EXECABORT",
        "UNBLOCKED",
    }
)


def _redis() -> Any:
    import redis.exceptions  # the caller has already imported redis-py

    return redis.exceptions


def classify_redis_error(exc: BaseException, where: str) -> BackendError | BackendDataError | None:
    """The scalekit error for a driver exception, or None if it is not the driver's.

    ``where`` names the server (a redacted URL) for the message.
    """
    if isinstance(exc, PoolExhausted):
        return BackendError(f"Redis at {where}: {exc}")
    ex = _redis()
    if isinstance(exc, ex.ResponseError) and not isinstance(
        exc, ex.NoScriptError | ex.ReadOnlyError | ex.OutOfMemoryError | ex.NoPermissionError
    ):
        text = str(exc)
        first = text.split(" ", 1)[0].upper() if text else ""
        if first not in _OUTAGE_PREFIXES and not _busy_script(text):
            return BackendDataError(f"Redis at {where} rejected the data of a key: {text}")
    elif isinstance(exc, ex.DataError):  # client-side: a value redis-py cannot encode
        return BackendDataError(f"Redis at {where}: {exc}")
    if isinstance(exc, ex.RedisError | OSError):
        return BackendError(f"Redis at {where} failed: {exc}")
    return None


def _busy_script(text: str) -> bool:
    # Redis < 7 words some server-state errors without a prefix
    return "BUSY Redis is busy running a script" in text


class map_redis_errors:
    """Re-raise driver errors as :class:`BackendError` / :class:`BackendDataError`.

    The driver's exception is chained as ``__cause__``. ``NoScriptError`` and
    non-driver exceptions (cancellation included) pass through unchanged.

    A class rather than a ``@contextmanager`` generator: it sits on every Redis call,
    and entering a stateless instance costs a fraction of a generator's set-up (one
    instance may be kept and reused, also concurrently: it holds nothing but ``where``).
    """

    __slots__ = ("where",)

    def __init__(self, where: str) -> None:
        self.where = where

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, tp: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        if exc is None or not isinstance(exc, Exception):
            return False
        if isinstance(exc, _redis().NoScriptError):
            return False
        mapped = classify_redis_error(exc, self.where)
        if mapped is None:
            return False
        raise mapped from exc

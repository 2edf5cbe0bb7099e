"""The one error tree of scalekit.

Every exception scalekit raises on purpose derives from :class:`ScalekitError`, and
the same classes serve sync and async code::

    ScalekitError
    ├── ConfigurationError (also a ValueError)   bad argument, URL, rate string, tier
    │   ├── MissingDependency (also ImportError) an optional extra is not installed
    │   └── MaintenanceRefused                   a maintenance job refused its input before
    │                                            touching a row; carries the ``fix`` (DDL)
    ├── BackendError                             Redis/PostgreSQL failed; chained from
    │                                            the driver's exception (``__cause__``)
    ├── BackendDataError                         the backend answered, but its reply is an
    │                                            error about one key's data (WRONGTYPE, a
    │                                            script error on a corrupt value): that
    │                                            key's problem, never a backend outage
    ├── SerializationError                       a value could not be encoded, or bytes
    │                                            (foreign, truncated, old schema) decoded
    ├── LimitExceeded                            something refused to run now
    │   ├── RateLimitExceeded                    carries ``retry_after`` and ``decision``
    │   ├── ConcurrencyLimitExceeded             no slot free within the timeout
    │   │   └── BulkheadFull                     a bulkhead's slots and queue are full
    │   └── CircuitOpenError                     a circuit breaker refused the call;
    │                                            carries ``retry_after`` and ``state``
    ├── DeadlineExceeded (also a TimeoutError)   a timeout or an overall deadline passed
    ├── PoolExhausted (also a TimeoutError)      no pooled connection within the acquire
    │                                            timeout; carries ``size`` and ``waiters``
    ├── CursorError                              a pagination or sync cursor from the
    │                                            client is tampered, truncated, foreign,
    │                                            expired or of another version (HTTP 400)
    └── MustRefetch                              a change-feed cursor can no longer be
                                                 continued (older than the tombstone
                                                 floor, another cluster, table or filter):
                                                 the client drops its copy and starts over
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scalekit.ratelimit._decision import Decision

__all__ = [
    "BackendDataError",
    "BackendError",
    "BulkheadFull",
    "CircuitOpenError",
    "ConcurrencyLimitExceeded",
    "ConfigurationError",
    "CursorError",
    "DeadlineExceeded",
    "LimitExceeded",
    "MaintenanceRefused",
    "MissingDependency",
    "MustRefetch",
    "PoolExhausted",
    "RateLimitExceeded",
    "ScalekitError",
    "SerializationError",
]


class ScalekitError(Exception):
    """Root of every exception scalekit raises on purpose."""


class ConfigurationError(ScalekitError, ValueError):
    """A value given to scalekit is invalid; the message names it and what is allowed."""


class MissingDependency(ConfigurationError, ImportError):
    """An optional extra is needed; the message names the ``pip install`` to run."""

    def __init__(self, feature: str, extra: str, module: str) -> None:
        super().__init__(
            f"{feature} needs the optional dependency {module!r}; "
            f"install it with: pip install 'scalekit-primitives[{extra}]'"
        )
        self.extra = extra
        self.module = module


class MaintenanceRefused(ConfigurationError):
    """A maintenance job refused to run before deleting or moving anything.

    The message says why (a missing index, a cutoff in the future, an archive table
    whose columns differ); ``fix`` is the DDL that would make the job acceptable, or
    ``""`` when the fix is a different argument.
    """

    def __init__(self, message: str, *, fix: str = "") -> None:
        super().__init__(f"{message}\nfix: {fix}" if fix else message)
        self.fix = fix

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        reason = str(self).split("\nfix: ", 1)[0]
        return functools.partial(type(self), reason, fix=self.fix), ()


class BackendError(ScalekitError):
    """A storage backend (Redis, PostgreSQL) failed or timed out.

    The driver's exception is chained as ``__cause__``.
    """


class BackendDataError(ScalekitError):
    """The backend answered, but with an error about the data of the key(s) involved.

    A value of the wrong type (``WRONGTYPE``), a Lua script failing on a corrupt or
    foreign value, a reply that does not parse. It is deliberately *not* a
    :class:`BackendError`: it says nothing about the backend's health, so it never
    trips a primitive's failure policy. Primitives handle it per key (a limiter
    resets the key's state, a cache treats the entry as a miss) and count it. The
    driver's exception is chained as ``__cause__``.
    """


class SerializationError(ScalekitError):
    """A value could not be serialized, or bytes could not be turned back into one.

    Raised for unsupported values, malformed, truncated or foreign bytes, and payloads
    that do not validate against the type hint; the underlying error, if any, is
    chained as ``__cause__``.
    """


class LimitExceeded(ScalekitError):
    """Base class of "not now" refusals; ``retry_after`` is in seconds."""

    retry_after: float

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimitExceeded(LimitExceeded):
    """A rate limit refused the call.

    ``retry_after`` is the number of seconds after which the same call could be
    allowed (``math.inf`` when it never can, e.g. a cost above the limit), and
    ``decision`` the full :class:`~scalekit.ratelimit.Decision`.
    """

    def __init__(self, decision: Decision, key: str | None = None) -> None:
        what = f" for key {key!r}" if key is not None else ""
        if math.isinf(decision.retry_after):
            when = "the cost exceeds the limit, so it can never be allowed"
        else:
            when = f"retry after {decision.retry_after:.3f}s"
        super().__init__(
            f"rate limit {decision.policy!r} exceeded{what}: {when}",
            retry_after=decision.retry_after,
        )
        self.decision = decision
        self.key = key


class ConcurrencyLimitExceeded(LimitExceeded):
    """No concurrency slot became free within the timeout."""


class BulkheadFull(ConcurrencyLimitExceeded):
    """A bulkhead had no free slot and no room in its queue (or the queue wait ran out).

    ``retry_after`` is ``0.0``: there is no schedule to wait for, only load.
    """

    def __init__(self, name: str, max_concurrent: int, max_queued: int) -> None:
        super().__init__(
            f"bulkhead {name!r} is full ({max_concurrent} running, {max_queued} queued)",
            retry_after=0.0,
        )
        self.name = name


class CircuitOpenError(LimitExceeded):
    """A circuit breaker refused the call without running it.

    ``retry_after`` is the number of seconds until the breaker lets a probe call
    through (``math.inf`` while it is held open by hand); ``state`` is the breaker's
    state (``"open"``, ``"half_open"`` or ``"forced_open"``) and ``name`` its name.
    """

    def __init__(self, name: str, state: str, retry_after: float) -> None:
        if math.isinf(retry_after):
            when = "it is held open until closed by hand"
        else:
            when = f"retry after {retry_after:.3f}s"
        super().__init__(f"circuit breaker {name!r} is {state}: {when}", retry_after=retry_after)
        self.name = name
        self.state = state


class DeadlineExceeded(ScalekitError, TimeoutError):
    """A per-attempt timeout or an overall deadline passed before the call finished."""


class PoolExhausted(ScalekitError, TimeoutError):
    """No connection of a pool became free within the acquire timeout.

    ``size`` is the pool's maximum size, ``waiters`` how many callers (this one
    included) were waiting when the timeout expired, ``timeout`` the seconds waited
    and ``pool`` the pool's name. It is also a :class:`TimeoutError`, so code that
    caught the driver's acquire timeout keeps working.
    """

    def __init__(self, pool: str, *, size: int, waiters: int, timeout: float) -> None:
        super().__init__(
            f"pool {pool!r} exhausted: all {size} connection(s) in use and none was "
            f"released within {timeout:.3f}s ({waiters} caller(s) waiting)"
        )
        self.pool = pool
        self.size = size
        self.waiters = waiters
        self.timeout = timeout

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:  # picklable across processes
        rebuild = functools.partial(
            type(self), self.pool, size=self.size, waiters=self.waiters, timeout=self.timeout
        )
        return rebuild, ()


class CursorError(ScalekitError):
    """A cursor given back by a client cannot be used.

    Tampered, truncated, signed with another secret, minted for another query,
    filter or tenant, older than the allowed age, or of another format version. It
    is the client's fault (map it to HTTP 400), never a configuration error, and
    scalekit never answers such a cursor with a page.
    """


class MustRefetch(ScalekitError):
    """A change-feed cursor is valid but can no longer be continued.

    The tombstones it would need were purged (it is older than the retention
    floor), or it was minted on another database cluster, table or filter. The
    client must drop its local copy and sync again from ``cursor=None``; ``reason``
    says which case it was.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:  # picklable across processes
        return functools.partial(type(self), str(self), reason=self.reason), ()

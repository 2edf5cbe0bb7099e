"""scalekit: reusable scaling primitives for Python services.

The public API is what ``__all__`` lists (a test keeps it honest); everything
else, including modules whose name starts with ``_``, is private. Here: the rate
limiters, backends, clocks and the whole error tree. The other primitives are
imported from their subpackages (``scalekit.cache``, ``scalekit.resilience``,
``scalekit.sampling``, ``scalekit.pools``, ``scalekit.batching``,
``scalekit.pagination``, ``scalekit.sync``), so that
``import scalekit`` stays cheap and loads none of them. :func:`primitive_of` leads
from any decorated function to the object behind it (``primitive_of(fn, Cache)``).
"""

from scalekit._clock import Clock, MonotonicClock
from scalekit._decorated import primitive_of
from scalekit._version import __version__
from scalekit.backends import MemoryBackend, RedisBackend, backend_from_url
from scalekit.errors import (
    BackendDataError,
    BackendError,
    BulkheadFull,
    CircuitOpenError,
    ConcurrencyLimitExceeded,
    ConfigurationError,
    CursorError,
    DeadlineExceeded,
    LimitExceeded,
    MaintenanceRefused,
    MissingDependency,
    MustRefetch,
    PoolExhausted,
    RateLimitExceeded,
    ScalekitError,
    SerializationError,
)
from scalekit.ratelimit import (
    AsyncConcurrencyLimiter,
    AsyncRateLimiter,
    ConcurrencyLimiter,
    Decision,
    Lease,
    Policy,
    Rate,
    RateLimiter,
    rate_limited,
)

__all__ = [
    "AsyncConcurrencyLimiter",
    "AsyncRateLimiter",
    "BackendDataError",
    "BackendError",
    "BulkheadFull",
    "CircuitOpenError",
    "Clock",
    "ConcurrencyLimitExceeded",
    "ConcurrencyLimiter",
    "ConfigurationError",
    "CursorError",
    "DeadlineExceeded",
    "Decision",
    "Lease",
    "LimitExceeded",
    "MaintenanceRefused",
    "MemoryBackend",
    "MissingDependency",
    "MonotonicClock",
    "MustRefetch",
    "Policy",
    "PoolExhausted",
    "Rate",
    "RateLimitExceeded",
    "RateLimiter",
    "RedisBackend",
    "ScalekitError",
    "SerializationError",
    "__version__",
    "backend_from_url",
    "primitive_of",
    "rate_limited",
]

"""scalekit: reusable scaling primitives for Python services.

The public API is what ``__all__`` lists (a test keeps it honest); everything
else, including modules whose name starts with ``_``, is private.
"""

from scalekit._clock import Clock, MonotonicClock
from scalekit._version import __version__
from scalekit.backends import MemoryBackend, RedisBackend, backend_from_url
from scalekit.errors import (
    BackendError,
    ConcurrencyLimitExceeded,
    ConfigurationError,
    LimitExceeded,
    MissingDependency,
    PoolExhausted,
    RateLimitExceeded,
    ScalekitError,
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
    "BackendError",
    "Clock",
    "ConcurrencyLimitExceeded",
    "ConcurrencyLimiter",
    "ConfigurationError",
    "Decision",
    "Lease",
    "LimitExceeded",
    "MemoryBackend",
    "MissingDependency",
    "MonotonicClock",
    "Policy",
    "PoolExhausted",
    "Rate",
    "RateLimitExceeded",
    "RateLimiter",
    "RedisBackend",
    "ScalekitError",
    "__version__",
    "backend_from_url",
    "rate_limited",
]

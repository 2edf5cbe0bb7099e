"""Rate limiting: policies, five algorithms, memory and Redis stores, one decision.

>>> from scalekit.ratelimit import RateLimiter
>>> limiter = RateLimiter("memory://", "3/minute")
>>> [limiter.hit("user:42").allowed for _ in range(4)]
[True, True, True, False]
"""

from scalekit.ratelimit._algorithms import ALGORITHMS, Algorithm
from scalekit.ratelimit._concurrency import AsyncConcurrencyLimiter, ConcurrencyLimiter, Lease
from scalekit.ratelimit._decision import Decision
from scalekit.ratelimit._decorator import rate_limited
from scalekit.ratelimit._limiter import AsyncRateLimiter, FailurePolicy, RateLimiter
from scalekit.ratelimit._metrics import ConcurrencyStats, RateLimiterStats
from scalekit.ratelimit._policy import Policy, PolicyLike, Rate, Tiers
from scalekit.ratelimit.asgi import RateLimitMiddleware

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "AsyncConcurrencyLimiter",
    "AsyncRateLimiter",
    "ConcurrencyLimiter",
    "ConcurrencyStats",
    "Decision",
    "FailurePolicy",
    "Lease",
    "Policy",
    "PolicyLike",
    "Rate",
    "RateLimitMiddleware",
    "RateLimiter",
    "RateLimiterStats",
    "Tiers",
    "rate_limited",
]

"""Rate limiting: policies, five algorithms, memory and Redis stores, one decision.

>>> from scalekit.ratelimit import RateLimiter
>>> limiter = RateLimiter("memory://", "3/minute")
>>> [limiter.hit("user:42").allowed for _ in range(4)]
[True, True, True, False]
"""

from scalekit.ratelimit._metrics import ConcurrencyStats, RateLimiterStats
from scalekit.ratelimit.algorithms import ALGORITHMS, Algorithm
from scalekit.ratelimit.asgi import RateLimitMiddleware
from scalekit.ratelimit.concurrency import AsyncConcurrencyLimiter, ConcurrencyLimiter, Lease
from scalekit.ratelimit.decision import Decision
from scalekit.ratelimit.decorator import rate_limited
from scalekit.ratelimit.limiter import AsyncRateLimiter, FailurePolicy, RateLimiter
from scalekit.ratelimit.policy import Policy, PolicyLike, Rate, Tiers

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

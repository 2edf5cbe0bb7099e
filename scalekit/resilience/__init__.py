"""Resilience: circuit breakers, retries, timeouts, deadlines and bulkheads.

Compose them in this order, outermost first::

    @retry(on=ConnectionError)            # 1. retries the whole guarded call
    @breaker                              # 2. rejects fast while open; never retried
    @timeout(2.0)                         # 3. each attempt has its own time limit
    @bulkhead(max_concurrent=10)          # 4. each attempt holds a slot only while it runs
    async def call_provider(...): ...

See docs/explanation/resilience.md for why this order.
"""

from scalekit._deprecated import moved_name
from scalekit.resilience import _machine
from scalekit.resilience._breaker import (
    BreakerEvent,
    BreakerRegistry,
    BreakerSnapshot,
    CircuitBreaker,
    ExceptionSpec,
    circuit_breaker,
    default_registry,
)
from scalekit.resilience._bulkhead import Bulkhead, BulkheadStats, bulkhead
from scalekit.resilience._policy import BreakerPolicy, State
from scalekit.resilience._retry import RetryBudget, RetryStats, retry, retry_after_from
from scalekit.resilience._shared import SharedState
from scalekit.resilience._timeouts import deadline, remaining, timeout

__all__ = [
    "BreakerEvent",
    "BreakerPolicy",
    "BreakerRegistry",
    "BreakerSnapshot",
    "Bulkhead",
    "BulkheadStats",
    "CircuitBreaker",
    "ExceptionSpec",
    "RetryBudget",
    "RetryStats",
    "SharedState",
    "State",
    "bulkhead",
    "circuit_breaker",
    "deadline",
    "default_registry",
    "remaining",
    "retry",
    "retry_after_from",
    "timeout",
]

_REMOVED = {
    "BreakerMachine": (
        lambda: _machine.BreakerMachine,
        "it is CircuitBreaker's internal state machine; use CircuitBreaker",
    ),
}


def __getattr__(name: str) -> object:
    return moved_name(__name__, name, _REMOVED)

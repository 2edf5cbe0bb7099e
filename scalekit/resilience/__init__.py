"""Resilience: circuit breakers, retries, timeouts, deadlines and bulkheads.

Compose them in this order, outermost first::

    @retry(on=ConnectionError)        # 1. retries the whole guarded call
    @breaker                          # 2. a rejected call is not retried while open
    @timeout(2.0)                     # 3. each attempt has its own time limit
    @bulkhead(max_concurrent=10)      # 4. each attempt holds a slot only while it runs
    async def call_provider(...): ...
"""

from scalekit.resilience.breaker import (
    BreakerEvent,
    BreakerRegistry,
    BreakerSnapshot,
    CircuitBreaker,
    ExceptionSpec,
    circuit_breaker,
    default_registry,
)
from scalekit.resilience.machine import BreakerMachine
from scalekit.resilience.policy import BreakerPolicy, State

__all__ = [
    "BreakerEvent",
    "BreakerMachine",
    "BreakerPolicy",
    "BreakerRegistry",
    "BreakerSnapshot",
    "CircuitBreaker",
    "ExceptionSpec",
    "State",
    "circuit_breaker",
    "default_registry",
]

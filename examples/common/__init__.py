"""What the example services share: the configuration switch and the core schema.

``ServiceConfig`` is the one configuration every service's ``create_app(config, ...)``
takes; ``primitives=False`` builds the same service with every scalekit primitive
switched off (no cache, no limits, no sampling, no breaker, OFFSET instead of keyset,
full refetch instead of delta sync), which is what the measured demo compares against.
``apply_schema(conn)`` creates the tables the chat and sync services share (users,
subscriptions, LLM configuration, conversations, messages); a service with tables of its
own applies its own ``schema.sql`` on top.
"""

from .config import ServiceConfig
from .db import apply_schema
from .workload import WorkloadResult

__all__ = ["ServiceConfig", "WorkloadResult", "apply_schema"]

"""DataLoader-style batching against N+1 queries.

- :class:`DataLoader`: the loads of one event-loop tick become one batch call;
  keys deduplicated; results in key order; per-key errors; ``max_batch_size``;
  results cached only within a :func:`request_scope` (contextvars), never a failure.
- :func:`row_loader` / :func:`group_loader`: asyncpg helpers running one
  ``= ANY($1)`` query per batch (one row, or a list of rows, per key).
- :class:`BatchScopeMiddleware`: an ASGI middleware opening a scope per request.
"""

from scalekit.batching._asgi import BatchScopeMiddleware
from scalekit.batching._loader import BatchFn, DataLoader, LoaderStats, request_scope
from scalekit.batching._postgres import group_loader, group_rows, index_rows, row_loader

__all__ = [
    "BatchFn",
    "BatchScopeMiddleware",
    "DataLoader",
    "LoaderStats",
    "group_loader",
    "group_rows",
    "index_rows",
    "request_scope",
    "row_loader",
]

"""``BatchScopeMiddleware``: one :func:`~scalekit.batching.request_scope` per request."""

from __future__ import annotations

from scalekit._asgi_types import ASGIApp, Receive, Scope, Send
from scalekit.batching._loader import request_scope

__all__ = ["BatchScopeMiddleware"]


class BatchScopeMiddleware:
    """Wrap an ASGI app so every HTTP/WebSocket request gets a fresh loader cache.

    ``app = BatchScopeMiddleware(app)``; lifespan events pass through unscoped.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        with request_scope():
            await self.app(scope, receive, send)

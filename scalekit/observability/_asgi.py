"""ASGI apps: ``health_app`` (mount at ``/health``) and ``metrics_app`` (``/metrics``).

They need no framework: Starlette's ``Mount``, FastAPI's ``app.mount`` or any ASGI
server serve them as they are.

``health_app`` answers, relative to where it is mounted:

- ``/live``: 200 while the process answers (no probe runs);
- ``/ready``: 200 when every probe answered in time, else 503;
- ``/`` (the mount point itself): the whole :class:`HealthReport` as JSON, with
  the status code of ``/ready``.

Utilisation (a database at 80 % of its connections) changes the report's
``status``, not readiness: pulling an instance out of a load balancer does not
free a connection. A change of status or readiness between two runs is logged
once as a ``health.changed`` event.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from scalekit._asgi_types import ASGIApp, Receive, Scope, Send
from scalekit.errors import ConfigurationError
from scalekit.observability._events import log_event
from scalekit.observability._health import HealthReport, Probe, Thresholds, health_report
from scalekit.observability._metrics import Registry

__all__ = ["health_app", "metrics_app"]


async def _respond(send: Send, status: int, body: bytes, content_type: str, head: bool) -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": b"" if head else body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


Handler = Callable[[Scope, Send, bool], Awaitable[None]]


def _get_only(handler: Handler) -> ASGIApp:
    """An ASGI app: the lifespan protocol answered, GET and HEAD passed to
    ``handler(scope, send, head)``, any other method a 405."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        head = scope.get("method") == "HEAD"
        if scope.get("method") not in ("GET", "HEAD"):
            await _respond(send, 405, b"method not allowed\n", "text/plain", head)
            return
        await handler(scope, send, head)

    return app


def _relative_path(scope: Scope) -> str:
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path", ""))
    if root and path.startswith(root):
        path = path[len(root) :]
    return path.rstrip("/")


def _json(data: Any) -> bytes:
    return json.dumps(data, allow_nan=False, default=str).encode()


def health_app(
    *probes: Probe,
    registry: Registry | None = None,
    thresholds: Mapping[str, Thresholds] | None = None,
    cache_seconds: float = 1.0,
) -> ASGIApp:
    """An ASGI app serving ``/live``, ``/ready`` and the full report (see above).

    Requests to ``/ready`` or ``/`` share one :func:`health_report` run: concurrent
    requests wait for the same run, and a report younger than ``cache_seconds`` is
    served again (``0``: every request runs the probes), so a burst of health checks
    is not a burst of connections to the database.
    """
    if isinstance(cache_seconds, bool) or not isinstance(cache_seconds, int | float):
        raise ConfigurationError(f"cache_seconds must be a number, got {cache_seconds!r}")
    if not 0 <= cache_seconds < math.inf:
        raise ConfigurationError(f"cache_seconds must be >= 0 and finite, got {cache_seconds!r}")
    last: list[tuple[float, asyncio.Task[HealthReport]]] = []
    seen: list[tuple[str, bool]] = []  # the last (status, ready) logged

    def changed(task: asyncio.Task[HealthReport]) -> None:
        if task.cancelled() or task.exception() is not None:
            return
        report = task.result()
        now = (report.status, report.ready)
        if seen and seen[0] != now:
            log_event(
                "health.changed",
                status=report.status,
                ready=report.ready,
                previous=seen[0][0],
                failing=",".join(c.name for c in report.checks if c.status != "ok"),
            )
        seen[:] = [now]

    async def current() -> HealthReport:
        now = time.monotonic()
        loop = asyncio.get_running_loop()
        if last:
            at, task = last[0]
            fresh = not task.done() or now - at < cache_seconds
            if fresh and task.get_loop() is loop:
                return await asyncio.shield(task)
        task = loop.create_task(health_report(*probes, registry=registry, thresholds=thresholds))
        task.add_done_callback(changed)
        last[:] = [(now, task)]
        return await asyncio.shield(task)

    async def serve(scope: Scope, send: Send, head: bool) -> None:
        path = _relative_path(scope)
        if path == "/live":
            await _respond(send, 200, b'{"status": "alive"}', "application/json", head)
            return
        if path not in ("", "/ready"):
            await _respond(send, 404, b'{"error": "not found"}', "application/json", head)
            return
        report = await current()
        code = 200 if report.ready else 503
        if path == "/ready":
            failed = [c.name for c in report.checks if c.error]
            body = _json({"ready": report.ready, "failed": failed})
        else:
            body = report.to_json().encode()
        await _respond(send, code, body, "application/json", head)

    return _get_only(serve)


def metrics_app(registry: Registry | None = None) -> ASGIApp:
    """An ASGI app answering every GET with the Prometheus text exposition of
    ``registry`` (the default one). Needs the ``prometheus`` extra (imported on
    the first request; without it the answer is a 501 naming the extra)."""

    async def serve(scope: Scope, send: Send, head: bool) -> None:
        try:
            from scalekit.observability.prometheus import exposition
        except ImportError as exc:
            await _respond(send, 501, f"{exc}\n".encode(), "text/plain", head)
            return
        body, content_type = exposition(registry)
        await _respond(send, 200, body, content_type, head)

    return _get_only(serve)

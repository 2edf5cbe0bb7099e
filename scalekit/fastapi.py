"""scalekit's errors as HTTP answers in a FastAPI/Starlette app, in one call.

    from fastapi import FastAPI
    from scalekit.fastapi import install_exception_handlers

    app = FastAPI()
    install_exception_handlers(app)

=============================  ======  ====================================================
error                          status  body / headers
=============================  ======  ====================================================
``RateLimitExceeded``          429     ``Retry-After`` and the IETF ``RateLimit`` headers
``ConcurrencyLimitExceeded``   429     (includes ``BulkheadFull``); no ``Retry-After``
``CircuitOpenError``           503     ``Retry-After`` while the breaker has a schedule
``PoolExhausted``              503     ``Retry-After: 1``
``BackendError``               503     the backend is down (its policy chose to raise)
``DeadlineExceeded``           504
``CursorError``                400     the client's cursor is unusable
``MustRefetch``                409     ``{"detail": ..., "reason": ...}``: sync again from scratch
=============================  ======  ====================================================

Bodies are JSON ``{"detail": "..."}``; they never carry the exception's message,
which may name keys, URLs or pools. Starlette is imported when a handler runs, not
when this module is.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from scalekit.errors import (
    BackendError,
    CircuitOpenError,
    ConcurrencyLimitExceeded,
    CursorError,
    DeadlineExceeded,
    MustRefetch,
    PoolExhausted,
    RateLimitExceeded,
)
from scalekit.ratelimit.asgi import HeadersMode
from scalekit.ratelimit.fastapi import _import_starlette, rate_limit_exceeded_handler

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

__all__ = ["error_response", "install_exception_handlers"]

#: exception class -> (status, detail), most specific first
_ANSWERS: tuple[tuple[type[Exception], int, str], ...] = (
    (ConcurrencyLimitExceeded, 429, "Too Many Requests"),
    (CircuitOpenError, 503, "Service Unavailable"),
    (PoolExhausted, 503, "Service Unavailable"),
    (BackendError, 503, "Service Unavailable"),
    (DeadlineExceeded, 504, "Gateway Timeout"),
    (CursorError, 400, "invalid cursor"),
    (MustRefetch, 409, "must refetch"),
)


def _retry_after(seconds: float) -> dict[str, str]:
    if not math.isfinite(seconds) or seconds <= 0:
        return {}
    return {"Retry-After": str(max(1, math.ceil(seconds - 1e-6)))}


def error_response(request: Request, exc: Exception, *, headers: HeadersMode = "draft") -> Response:
    """The response :func:`install_exception_handlers` gives ``exc`` (table above)."""
    if isinstance(exc, RateLimitExceeded):
        return rate_limit_exceeded_handler(request, exc, headers=headers)
    starlette = _import_starlette()
    answer = next(((s, d) for cls, s, d in _ANSWERS if isinstance(exc, cls)), None)
    if answer is None:
        raise TypeError(f"error_response() has no answer for {type(exc).__name__}") from exc
    status, detail = answer
    out: dict[str, str] = {}
    body: dict[str, Any] = {"detail": detail}
    if isinstance(exc, CircuitOpenError):
        out = _retry_after(exc.retry_after)
    elif isinstance(exc, PoolExhausted):
        out = {"Retry-After": "1"}
    elif isinstance(exc, MustRefetch):
        body["reason"] = exc.reason
    response: Response = starlette.responses.JSONResponse(body, status_code=status, headers=out)
    return response


def install_exception_handlers(app: Any, *, headers: HeadersMode = "draft") -> None:
    """Register :func:`error_response` on ``app`` (FastAPI or Starlette) for every
    error in the table above; ``headers`` picks the rate-limit header flavour."""

    def handler(request: Request, exc: Exception) -> Response:
        return error_response(request, exc, headers=headers)

    for cls in (RateLimitExceeded, *(cls for cls, _, _ in _ANSWERS)):
        app.add_exception_handler(cls, handler)

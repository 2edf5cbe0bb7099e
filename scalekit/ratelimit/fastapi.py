"""Rate limits as FastAPI dependencies: ``Depends(limit(chat, key=user_id))``.

::

    from fastapi import Depends, FastAPI
    from scalekit.ratelimit import AsyncRateLimiter
    from scalekit.ratelimit.fastapi import install_handler, limit

    app = FastAPI()
    install_handler(app)  # RateLimitExceeded -> 429 with Retry-After
    chat = AsyncRateLimiter("redis://localhost:6379/0", {"free": "20/minute", "paid": "100/minute"})

    async def plan(request) -> str: ...  # e.g. a cached subscription query

    @app.post("/messages", dependencies=[Depends(limit(chat, key=user_id, tier=plan))])
    async def send_message(...): ...

``key``, ``tier`` and ``cost`` are values or callables taking the ``Request``; a
callable may be ``async``. A key of ``None`` (an anonymous request) falls back to the
client's address (IPv6 clients by their /64), and a request without one shares the
``"anonymous"`` bucket: an anonymous request is never unlimited. The rate-limit
headers (``RateLimit``/``RateLimit-Policy``, or the legacy ``X-RateLimit-*``) are
added to successful responses too; a denied request raises
:class:`~scalekit.errors.RateLimitExceeded`, which :func:`rate_limit_exceeded_handler`
(installed by :func:`install_handler`) turns into a 429 with ``Retry-After``.

A tier the limiter does not know (a stale plan name in a token, a typo in a header)
is answered by ``unknown_tier``: ``"reject"`` (default) raises FastAPI's
``HTTPException(400)``; ``"default"`` uses ``default_tier``. Never a 500.

FastAPI (Starlette) is imported when :func:`limit` is called, not when this module is.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypeVar

from scalekit.errors import ConfigurationError, MissingDependency, RateLimitExceeded
from scalekit.ratelimit.asgi import HeadersMode, client_address, rate_limit_headers
from scalekit.ratelimit.decision import Decision
from scalekit.ratelimit.limiter import AsyncRateLimiter, RateLimiter

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

__all__ = ["install_handler", "limit", "rate_limit_exceeded_handler"]

T = TypeVar("T")
#: a value, or a callable of the request returning it (possibly awaitable)
FromRequest: TypeAlias = T | Callable[["Request"], T | Awaitable[T]]
UnknownTier = Literal["reject", "default"]

ANONYMOUS = "anonymous"


def _import_starlette() -> Any:
    try:
        import starlette.requests
        import starlette.responses
    except ImportError as exc:  # pragma: no cover - exercised without the dependency
        raise MissingDependency("the FastAPI rate-limit dependency", "fastapi", "fastapi") from exc
    return starlette


async def _resolve(value: Any, request: Request) -> Any:
    if callable(value):
        value = value(request)
        if inspect.isawaitable(value):
            value = await value
    return value


def _client_key(request: Request) -> str:
    key = client_address(request.scope)  # IPv6 clients by their /64
    return key if key else ANONYMOUS


def limit(
    limiter: AsyncRateLimiter | RateLimiter,
    *,
    key: FromRequest[str | None] = None,
    tier: FromRequest[str | None] = None,
    cost: FromRequest[int] = 1,
    headers: HeadersMode = "draft",
    exempt: Callable[[Request], bool] | None = None,
    unknown_tier: UnknownTier = "reject",
    default_tier: str | None = None,
) -> Callable[..., Awaitable[Decision | None]]:
    """A FastAPI dependency that spends ``cost`` of ``limiter`` for each request.

    The :class:`~scalekit.ratelimit.Decision` is returned (``None`` for an exempt
    request) and kept in ``request.state.rate_limit`` for the endpoint to read.
    A synchronous :class:`RateLimiter` is accepted only on an in-memory backend (a
    Redis call from it would block the event loop); use :class:`AsyncRateLimiter`.
    """
    if not isinstance(limiter, AsyncRateLimiter | RateLimiter):
        raise ConfigurationError(
            f"limit() needs an AsyncRateLimiter (or an in-memory RateLimiter), got {limiter!r}"
        )
    if isinstance(limiter, RateLimiter) and not limiter.backend.__class__.__name__.startswith(
        "Memory"
    ):
        raise ConfigurationError(
            "a synchronous RateLimiter on Redis would block the event loop; "
            "use AsyncRateLimiter with the same arguments"
        )
    if unknown_tier not in ("reject", "default"):
        raise ConfigurationError(
            f"unknown_tier must be 'reject' or 'default', got {unknown_tier!r}"
        )
    tiers = limiter.tiers
    if unknown_tier == "default" and (tiers is None or default_tier not in tiers):
        raise ConfigurationError(
            "unknown_tier='default' needs default_tier= one of the limiter's tiers "
            f"({', '.join(map(repr, tiers or {}))}), got {default_tier!r}"
        )
    rate_limit_headers(Decision(True, 1, 1, 0.0, 0.0, "1/1s", 1.0), headers)  # validates mode
    starlette = _import_starlette()
    from fastapi import HTTPException

    async def dependency(request: Request, response: Response) -> Decision | None:
        if exempt is not None and exempt(request):
            return None
        k = await _resolve(key, request)
        if k is None:
            k = _client_key(request)
        t = await _resolve(tier, request)
        if tiers is not None and t not in tiers:
            if unknown_tier == "reject":
                raise HTTPException(status_code=400, detail="unknown rate-limit tier")
            t = default_tier
        c = await _resolve(cost, request)
        if isinstance(limiter, AsyncRateLimiter):
            decision = await limiter.hit(k, c, tier=t)
        else:
            decision = limiter.hit(k, c, tier=t)
        extra = rate_limit_headers(decision, headers)
        if not decision.allowed:
            raise RateLimitExceeded(decision, k)
        for name, value in extra:
            response.headers.append(name.decode("latin-1"), value.decode("latin-1"))
        request.state.rate_limit = decision
        return decision

    # FastAPI reads the parameters' types from the signature: give it the classes
    # themselves (the annotations above are strings under postponed evaluation)
    param = inspect.Parameter
    dependency.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            param("request", param.POSITIONAL_OR_KEYWORD, annotation=starlette.requests.Request),
            param("response", param.POSITIONAL_OR_KEYWORD, annotation=starlette.responses.Response),
        ],
        return_annotation=Decision | None,
    )
    dependency.__qualname__ = f"limit({limiter.name!r})"
    return dependency


def rate_limit_exceeded_handler(
    request: Request, exc: Exception, *, headers: HeadersMode = "draft"
) -> Response:
    """A 429 JSON response with ``Retry-After`` and the rate-limit headers of ``exc``."""
    starlette = _import_starlette()
    assert isinstance(exc, RateLimitExceeded)
    out: dict[str, str] = {}
    retry = exc.retry_after
    if math.isfinite(retry):
        out["Retry-After"] = str(max(1, math.ceil(retry - 1e-6)))
    for name, value in rate_limit_headers(exc.decision, headers):
        out[name.decode("latin-1")] = value.decode("latin-1")
    response: Response = starlette.responses.JSONResponse(
        {"detail": "Too Many Requests"}, status_code=429, headers=out
    )
    return response


def install_handler(app: Any, *, headers: HeadersMode = "draft") -> None:
    """Register :func:`rate_limit_exceeded_handler` on a FastAPI/Starlette ``app``."""

    def handler(request: Request, exc: Exception) -> Response:
        return rate_limit_exceeded_handler(request, exc, headers=headers)

    app.add_exception_handler(RateLimitExceeded, handler)

"""Rate limits as FastAPI dependencies: ``Depends(limit(chat, key=user_id))``.

::

    from fastapi import Depends, FastAPI
    from scalekit.ratelimit import RateLimiter
    from scalekit.ratelimit.fastapi import install_handler, limit

    app = FastAPI()
    install_handler(app)  # RateLimitExceeded -> 429 with Retry-After
    chat = RateLimiter("redis://localhost:6379/0", {"free": "20/minute", "paid": "100/minute"})

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

A request whose work failed need not spend the quota: ``refund_on`` names the
exceptions (classes, HTTP status codes of an ``HTTPException``, or a predicate) that,
raised by the endpoint or a later dependency, give the request's cost back with
:meth:`~scalekit.ratelimit.RateLimiter.arefund` before the exception goes on to its
handler::

    @app.post("/messages", dependencies=[Depends(limit(chat, key=user_id, refund_on=(503,)))])
    async def send_message(...):
        ...
        raise HTTPException(503, "the model is overloaded")  # the message is not counted

A refund never raises (a Redis outage follows the limiter's ``on_backend_error``), so
the endpoint's own exception is the one the client sees.

:func:`lifespan_check` fails an app's boot, with the redacted URL, when a limiter's
Redis does not answer.

FastAPI (Starlette) is imported when :func:`limit` is called, not when this module is.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias, TypeVar

from scalekit.errors import ConfigurationError, MissingDependency, RateLimitExceeded
from scalekit.ratelimit._decision import Decision
from scalekit.ratelimit._limiter import RateLimiter
from scalekit.ratelimit.asgi import HeadersMode, client_address, rate_limit_headers

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

__all__ = [
    "RefundOn",
    "install_handler",
    "lifespan_check",
    "limit",
    "limit_message",
    "rate_limit_exceeded_handler",
]

T = TypeVar("T")
#: a value, or a callable of the request returning it (possibly awaitable)
FromRequest: TypeAlias = T | Callable[["Request"], T | Awaitable[T]]
UnknownTier = Literal["reject", "default"]
#: which failures give the cost back: exception classes and HTTP status codes (an
#: exception whose ``status_code`` is one of them), or a predicate of the exception
RefundOn: TypeAlias = Sequence[type[BaseException] | int] | Callable[[BaseException], bool]

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


def _refund_predicate(refund_on: RefundOn | None) -> Callable[[BaseException], bool] | None:
    if refund_on is None:
        return None
    if callable(refund_on) and not isinstance(refund_on, type):
        return refund_on
    if isinstance(refund_on, type | int | str) or not isinstance(refund_on, Sequence):
        raise ConfigurationError(
            "refund_on must be a sequence of exception classes and HTTP status codes, "
            f"or a predicate of the exception; got {refund_on!r}"
        )
    classes: list[type[BaseException]] = []
    codes: set[int] = set()
    for item in refund_on:
        if isinstance(item, type) and issubclass(item, BaseException):
            classes.append(item)
        elif isinstance(item, int) and not isinstance(item, bool) and 100 <= item <= 599:
            codes.add(item)
        else:
            raise ConfigurationError(
                f"refund_on: expected exception classes or HTTP status codes, got {item!r}"
            )
    types = tuple(classes)

    def matches(exc: BaseException) -> bool:
        return isinstance(exc, types) or getattr(exc, "status_code", None) in codes

    return matches


def _client_key(request: Request) -> str:
    key = client_address(request.scope)  # IPv6 clients by their /64
    return key if key else ANONYMOUS


def limit(
    limiter: RateLimiter,
    *,
    key: FromRequest[str | None] = None,
    tier: FromRequest[str | None] = None,
    cost: FromRequest[int] = 1,
    headers: HeadersMode = "draft",
    exempt: Callable[[Request], bool] | None = None,
    unknown_tier: UnknownTier = "reject",
    default_tier: str | None = None,
    refund_on: RefundOn | None = None,
) -> Callable[..., Any]:
    """A FastAPI dependency that spends ``cost`` of ``limiter`` for each request.

    The :class:`~scalekit.ratelimit.Decision` is returned (``None`` for an exempt
    request) and kept in ``request.state.rate_limit`` for the endpoint to read.
    ``refund_on`` (see the module docstring) gives the cost back when the endpoint
    fails with one of those exceptions. The dependency awaits the limiter's async
    methods (``ahit``, ``arefund``): a Redis round trip never blocks the event loop.
    """
    if not isinstance(limiter, RateLimiter):
        raise ConfigurationError(f"limit() needs a RateLimiter, got {limiter!r}")
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
    should_refund = _refund_predicate(refund_on)
    starlette = _import_starlette()
    from fastapi import HTTPException

    async def spend(request: Request, response: Response) -> tuple[Decision, str, int, Any] | None:
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
        decision = await limiter.ahit(k, c, tier=t)
        extra = rate_limit_headers(decision, headers)
        if not decision.allowed:
            raise RateLimitExceeded(decision, k)
        for name, value in extra:
            response.headers.append(name.decode("latin-1"), value.decode("latin-1"))
        request.state.rate_limit = decision
        return decision, k, c, t

    async def dependency(request: Request, response: Response) -> Decision | None:
        spent = await spend(request, response)
        return None if spent is None else spent[0]

    async def refunding(request: Request, response: Response) -> AsyncIterator[Decision | None]:
        # FastAPI throws the endpoint's exception in at the yield
        spent = await spend(request, response)
        if spent is None:
            yield None
            return
        decision, k, c, t = spent
        try:
            yield decision
        except Exception as exc:
            assert should_refund is not None
            if should_refund(exc):
                await limiter.arefund(k, c, tier=t)
            raise

    # FastAPI reads the parameters' types from the signature: give it the classes
    # themselves (the annotations above are strings under postponed evaluation)
    param = inspect.Parameter
    chosen: Callable[..., Any] = dependency if should_refund is None else refunding
    chosen.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            param("request", param.POSITIONAL_OR_KEYWORD, annotation=starlette.requests.Request),
            param("response", param.POSITIONAL_OR_KEYWORD, annotation=starlette.responses.Response),
        ],
        return_annotation=Decision | None,
    )
    chosen.__qualname__ = f"limit({limiter.name!r})"
    return chosen


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


#: what a websocket handler does with a message over the limit
OnExceeded = Literal["error", "close"]
#: RFC 6455 "policy violation": the close code for a client over its limit
POLICY_VIOLATION = 1008


async def limit_message(
    websocket: Any,
    limiter: RateLimiter,
    key: str,
    *,
    cost: int = 1,
    tier: str | None = None,
    on_exceeded: OnExceeded = "error",
) -> bool:
    """Spend ``cost`` of ``limiter`` for one websocket message; true if the handler
    may process it.

    Over the limit, ``on_exceeded="error"`` sends the client a JSON frame
    ``{"type": "rate_limited", "retry_after": s, "limit": n, "remaining": n,
    "policy": "..."}`` (``retry_after`` in whole seconds, ``null`` for never) and
    keeps the connection; ``"close"`` closes it with code 1008 (policy violation)
    and the retry delay in the reason: stop reading then. ``websocket`` is a
    Starlette/FastAPI ``WebSocket``; the limiter's :meth:`~RateLimiter.ahit` is
    awaited.
    """
    if on_exceeded not in ("error", "close"):
        raise ConfigurationError(f"on_exceeded must be 'error' or 'close', got {on_exceeded!r}")
    if not isinstance(limiter, RateLimiter):
        raise ConfigurationError(f"limit_message() needs a RateLimiter, got {limiter!r}")
    decision = await limiter.ahit(key, cost, tier=tier)
    if decision.allowed:
        return True
    retry = decision.retry_after
    seconds = max(1, math.ceil(retry - 1e-6)) if math.isfinite(retry) else None
    if on_exceeded == "close":
        reason = "rate limit exceeded" + ("" if seconds is None else f"; retry after {seconds} s")
        await websocket.close(code=POLICY_VIOLATION, reason=reason)
    else:
        await websocket.send_json(
            {
                "type": "rate_limited",
                "retry_after": seconds,
                "limit": decision.limit,
                "remaining": decision.remaining,
                "policy": decision.policy,
            }
        )
    return False


class _Pingable(Protocol):
    def ping(self) -> object: ...


def lifespan_check(
    *limiters: _Pingable,
    lifespan: Callable[[Any], AbstractAsyncContextManager[Any]] | None = None,
) -> Callable[[Any], AbstractAsyncContextManager[Any]]:
    """A FastAPI/Starlette ``lifespan`` that fails the boot unless every limiter's
    backend answers (``FastAPI(lifespan=lifespan_check(chat, uploads))``).

    Each object's ``aping()`` is awaited, all at once (an object with only a
    ``ping()``: awaited if it is a coroutine function, else run in a worker thread,
    so a Redis call never blocks the loop); the first failure is raised: a
    :class:`~scalekit.errors.BackendError` naming the limiter and the redacted URL,
    which the server prints before exiting. ``lifespan`` wraps the app's own
    lifespan, entered once the check passed. Anything with a ``ping()`` fits (a
    cache's, for one).
    """
    for limiter in limiters:
        if not callable(getattr(limiter, "ping", None)):
            raise ConfigurationError(f"lifespan_check needs objects with ping(), got {limiter!r}")

    async def check(limiter: _Pingable) -> None:
        aping = getattr(limiter, "aping", None)
        if inspect.iscoroutinefunction(aping):
            await aping()
        elif inspect.iscoroutinefunction(limiter.ping):
            await limiter.ping()
        else:
            await asyncio.to_thread(limiter.ping)

    @contextlib.asynccontextmanager
    async def checked(app: Any) -> AsyncIterator[Any]:
        await asyncio.gather(*(check(limiter) for limiter in limiters))
        if lifespan is None:
            yield None
            return
        async with lifespan(app) as state:
            yield state

    return checked


def install_handler(app: Any, *, headers: HeadersMode = "draft") -> None:
    """Register :func:`rate_limit_exceeded_handler` on a FastAPI/Starlette ``app``."""

    def handler(request: Request, exc: Exception) -> Response:
        return rate_limit_exceeded_handler(request, exc, headers=headers)

    app.add_exception_handler(RateLimitExceeded, handler)

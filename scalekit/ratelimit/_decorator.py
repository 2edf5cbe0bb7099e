"""``@rate_limited``: one decorator for sync and async functions."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ParamSpec, TypeVar, cast

from scalekit._decorated import attach
from scalekit.backends import BackendLike
from scalekit.errors import ConfigurationError, RateLimitExceeded
from scalekit.ratelimit._algorithms import Algorithm
from scalekit.ratelimit._limiter import AsyncRateLimiter, RateLimiter
from scalekit.ratelimit._policy import PolicyLike

__all__ = ["rate_limited"]

P = ParamSpec("P")
R = TypeVar("R")

KeyArg = str | Callable[..., str]


def _resolve(part: KeyArg | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    if part is None or isinstance(part, str):
        return part
    return part(*args, **kwargs)


def rate_limited(
    limiter: RateLimiter | PolicyLike | Mapping[str, PolicyLike],
    *,
    key: KeyArg,
    cost: int | Callable[..., int] = 1,
    tier: KeyArg | None = None,
    backend: BackendLike = "memory://",
    algorithm: Algorithm = "sliding_window",
    **limiter_options: Any,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Rate-limit a function; a denied call raises :class:`RateLimitExceeded`.

    ``limiter`` is a :class:`RateLimiter`, or a policy (``"60/hour"``, a tier
    mapping, …) from which one is built on ``backend`` with ``algorithm`` and
    ``limiter_options``. ``key``, ``cost`` and ``tier`` are values or callables that
    receive the wrapped function's arguments, e.g.
    ``key=lambda user_id, **_: f"user:{user_id}"``.

    The function is inspected once, at decoration time: an async function's
    wrapper awaits :meth:`RateLimiter.ahit`, a sync one calls
    :meth:`RateLimiter.hit`. ``primitive_of(fn, RateLimiter)`` is the limiter.
    """

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        is_async = inspect.iscoroutinefunction(fn)
        lim: RateLimiter
        if isinstance(limiter, RateLimiter):
            lim = limiter
        else:
            lim = RateLimiter(backend, limiter, algorithm=algorithm, **limiter_options)
        if not isinstance(key, str) and not callable(key):
            raise ConfigurationError(f"key must be a str or a callable, got {key!r}")

        def params(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, int, str | None]:
            k = _resolve(key, args, kwargs)
            c = cost(*args, **kwargs) if callable(cost) else cost
            return cast(str, k), c, _resolve(tier, args, kwargs)

        if is_async:
            afn = cast(Callable[P, Awaitable[Any]], fn)

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                k, c, t = params(args, kwargs)
                d = await lim.ahit(k, c, tier=t)
                if not d.allowed:
                    raise RateLimitExceeded(d, k)
                return await afn(*args, **kwargs)

            attach(async_wrapper, lim, "limiter")
            return cast(Callable[P, R], async_wrapper)

        if isinstance(lim, AsyncRateLimiter):
            raise ConfigurationError(
                f"{fn.__qualname__} is a sync function; it needs a RateLimiter, "
                "not an AsyncRateLimiter"
            )
        sync_lim = lim

        @functools.wraps(fn)
        def sync_wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            k, c, t = params(args, kwargs)
            d = sync_lim.hit(k, c, tier=t)
            if not d.allowed:
                raise RateLimitExceeded(d, k)
            return fn(*args, **kwargs)

        attach(sync_wrapper, sync_lim, "limiter")
        return sync_wrapper

    return decorate

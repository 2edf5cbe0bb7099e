"""``RateLimitMiddleware``: rate-limit any ASGI application, one hit per HTTP request.

Pure ASGI: nothing here imports FastAPI or Starlette, yet the middleware plugs into
both (and into any other ASGI 3 framework or server). With FastAPI / Starlette::

    from fastapi import FastAPI
    from scalekit.ratelimit import RateLimiter
    from scalekit.ratelimit.asgi import RateLimitMiddleware

    def user_or_ip(scope):  # the ASGI scope; None: do not limit this request
        user = dict(scope["headers"]).get(b"x-user-id")
        if user:
            return "user:" + user.decode("latin-1")
        return "ip:" + scope["client"][0] if scope.get("client") else None

    app = FastAPI()
    app.add_middleware(
        RateLimitMiddleware,
        limiter=RateLimiter("redis://localhost:6379/0", "100/minute; 2000/hour"),
        key=user_or_ip,
        exempt=lambda scope: scope["path"] in ("/healthz", "/metrics"),
    )

``add_middleware`` passes the app first and the keywords on, so every option below
works there too; Starlette's ``Middleware(RateLimitMiddleware, limiter=..., key=...)``
in ``Starlette(middleware=[...])`` is the same.

With a plain ASGI callable (or to wrap any app by hand)::

    from scalekit.ratelimit import RateLimiter
    from scalekit.ratelimit.asgi import RateLimitMiddleware

    async def hello(scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"hello"})

    def api_key(scope):  # None: this request is not limited
        key = dict(scope["headers"]).get(b"x-api-key")
        return "key:" + key.decode("latin-1") if key else None

    def plan(scope):
        return "paid" if dict(scope["headers"]).get(b"x-plan") == b"paid" else "free"

    app = RateLimitMiddleware(
        hello,
        RateLimiter("memory://", {"free": "20/minute", "paid": "600/minute"}),
        key=api_key,
        tier=plan,
        cost=lambda scope: 5 if scope["method"] == "POST" else 1,
        headers="both",
    )
    # then serve it: uvicorn module:app

What it does for every ``http`` request (other scope types, ``lifespan`` and
``websocket``, go to the app untouched and are never limited):

1. ``exempt(scope)`` true: the app runs, nothing is counted, no headers are added.
2. ``key(scope)`` returns the rate-limit key (it may be ``async``). ``None`` (an
   anonymous request) falls back to the client address, and a request without one
   (a Unix socket) shares the ``"anonymous"`` bucket: **never unlimited** (use
   ``exempt`` to let requests through uncounted). The default key is the client
   address, ``scope["client"][0]``, with an IPv6 address reduced to its /64 network
   (one host usually owns a whole /64, so keying by address would let it use 2**64
   keys) and an IPv4-mapped IPv6 address to its IPv4 address (see
   :func:`client_network` for another prefix length). Behind reverse proxies that
   is the proxy's address: let the server rewrite it (uvicorn ``--proxy-headers``
   / ``--forwarded-allow-ips``) or use ``key=forwarded_client(trusted_hops=N)``,
   which reads the N-th address from the right of ``X-Forwarded-For`` (the part
   your own proxies wrote; what the client wrote left of it is never trusted).
3. ``limiter.hit(key, cost, tier=tier)`` with ``cost`` (an int or ``cost(scope)``,
   sync or async)
   and ``tier`` (``None``, a tier name, or ``tier(scope)``; a tiered limiter needs one).
   A ``tier(scope)`` that names no tier of the limiter (it usually comes from the
   client) gets ``default_tier`` if one is declared, else a ``400 Bad Request``
   with ``{"detail": "Unknown tier"}``; never a 500.
4. Allowed: the app runs; the rate-limit headers are appended to its
   ``http.response.start`` message (its own headers are kept).
   Denied: the app is **not** called; the middleware answers ``429 Too Many
   Requests`` with a small JSON body ``{"detail": "Too Many Requests"}``,
   ``Retry-After`` and the rate-limit headers.

Headers (``headers=``):

- ``"draft"`` (default), the IETF draft *RateLimit header fields for HTTP*
  (draft-ietf-httpapi-ratelimit-headers-10/-11, structured fields)::

      RateLimit-Policy: "100/minute";q=100;w=60
      RateLimit: "100/minute";r=99;t=60

  The item is :attr:`Decision.policy` (the policy's name; the tier name for a tier
  given as a rate string) as an sf-string; ``q`` the limit and ``w`` the window in
  whole seconds (rounded up, at least 1) of the window the decision reports (the
  most restrictive one of a multi-window policy); ``r`` the remaining quota; ``t``
  the seconds until that window is back to its full limit, rounded up. On a 429
  that carries a ``Retry-After``, ``t`` is the ``Retry-After`` value instead: the
  draft asks that ``Retry-After`` never point before the end of the effective
  window, and until then the client indeed gets no more than ``r`` (with a sliding
  window or a bucket, quota comes back before the whole window has reset).
- ``"legacy"``: ``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and
  ``X-RateLimit-Reset`` (seconds until the window resets, rounded up, not a
  timestamp). An app that sets one of these itself keeps its own value.
- ``"both"``, or ``"none"`` (``Retry-After`` is still sent on a 429).

``Retry-After`` is ``retry_after`` in whole seconds, rounded up, at least 1. When the
request can never be allowed (its cost is above the limit, ``retry_after`` is
infinite), ``Retry-After`` is omitted: there is no time after which a retry helps.

``limiter`` is a :class:`RateLimiter`; the middleware awaits its async methods
(``ahit``, ``arefund``), so a Redis round trip never blocks the event loop. Errors
raised by ``key``, ``cost`` or ``tier`` themselves (bugs in the app's functions)
propagate to the server, which answers 500.

A full memory store (``max_keys`` keys per window) refuses *new* keys and the
limiter applies its ``on_backend_error`` policy to them: ``fail_open`` lets them
through uncounted, ``fail_closed`` answers 429. Choose it per limiter; the /64
default key bounds how many keys one client can create.
"""

from __future__ import annotations

import inspect
import ipaddress
import json
import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Literal, TypeAlias

from scalekit import _validate as check
from scalekit._asgi_types import ASGIApp, Message, Receive, Scope, Send
from scalekit.errors import ConfigurationError
from scalekit.ratelimit._decision import Decision
from scalekit.ratelimit._limiter import RateLimiter

__all__ = [
    "ASGIApp",
    "HeadersMode",
    "Message",
    "RateLimitMiddleware",
    "Receive",
    "Scope",
    "Send",
    "client_address",
    "client_network",
    "forwarded_client",
    "rate_limit_headers",
]

HeadersMode: TypeAlias = Literal["draft", "legacy", "both", "none"]
_HEADERS_MODES: tuple[HeadersMode, ...] = ("draft", "legacy", "both", "none")

Header: TypeAlias = tuple[bytes, bytes]

# Float slack before rounding up: 60.0000000001 seconds of window arithmetic is 60.
_EPS = 1e-6

_LEGACY_NAMES = (b"x-ratelimit-limit", b"x-ratelimit-remaining", b"x-ratelimit-reset")
_DENIED_BODY = json.dumps({"detail": "Too Many Requests"}).encode()
_UNKNOWN_TIER_BODY = json.dumps({"detail": "Unknown tier"}).encode()

_V6 = ipaddress.IPv6Address
_ALL_ONES = (1 << 128) - 1


def _network_key(host: str, prefix: int) -> str:
    """An IPv6 ``host`` as ``network/prefix`` (its IPv4 address if IPv4-mapped)."""
    try:
        addr = _V6(host)
    except ValueError:
        return host  # not an address (a test client's name): used as is
    mapped = addr.ipv4_mapped
    if mapped is not None:
        return str(mapped)
    mask = _ALL_ONES ^ ((1 << (128 - prefix)) - 1)
    return f"{_V6(int(addr) & mask).compressed}/{prefix}"


def client_network(*, ipv6_prefix: int = 64) -> Callable[[Scope], str | None]:
    """A key function: the client's IPv4 address, or its IPv6 network.

    An IPv6 client is keyed by its ``/ipv6_prefix`` network (``2001:db8:1:2::/64``;
    ``128`` keys single addresses, ``48`` whole sites); an IPv4-mapped IPv6 address
    (``::ffff:192.0.2.1``) is keyed as the IPv4 address it is. ``None`` (not
    limited) when the server gives no client address.
    """
    prefix = check.count(ipv6_prefix, "ipv6_prefix", minimum=0, maximum=128)

    def key(scope: Scope) -> str | None:
        client = scope.get("client")
        if not client:
            return None
        host = client[0]
        if not host:
            return None
        host = str(host)
        return _network_key(host, prefix) if ":" in host else host

    key.__name__ = key.__qualname__ = f"client_network(ipv6_prefix={prefix})"
    return key


_client_network_64 = client_network()


def client_address(scope: Scope) -> str | None:
    """The default key: the client's IPv4 address, or its IPv6 /64 network.

    ``scope["client"][0]``, with an IPv6 address reduced to its /64 and an
    IPv4-mapped one to its IPv4 address (:func:`client_network` for another
    prefix). ``None`` (not limited) when the server gives no client address.
    """
    return _client_network_64(scope)


def forwarded_client(
    *, trusted_hops: int = 1, ipv6_prefix: int = 64
) -> Callable[[Scope], str | None]:
    """A key function for an app behind ``trusted_hops`` reverse proxies that each
    append the address they received the request from to ``X-Forwarded-For``.

    The client is the ``trusted_hops``-th address from the right of the combined
    ``X-Forwarded-For`` fields: everything left of it was written by the client
    and can be forged, so it is never used. With fewer addresses than trusted hops
    (a request that bypassed the proxies) or a malformed entry, the key falls back
    to the connection's own address (:func:`client_network`), never to "unlimited".
    IPv6 clients are keyed by their ``/ipv6_prefix`` network as with
    :func:`client_network`.
    """
    hops = check.count(trusted_hops, "trusted_hops", minimum=1, maximum=64)
    prefix = check.count(ipv6_prefix, "ipv6_prefix", minimum=0, maximum=128)
    direct = client_network(ipv6_prefix=prefix)

    def key(scope: Scope) -> str | None:
        chain: list[str] = []
        for name, value in scope.get("headers") or ():
            if bytes(name).lower() == b"x-forwarded-for":
                chain.extend(p.strip() for p in bytes(value).decode("latin-1").split(","))
        if len(chain) >= hops:
            host = chain[-hops]
            try:
                addr = ipaddress.ip_address(host)
            except ValueError:
                return direct(scope)
            return _network_key(str(addr), prefix) if addr.version == 6 else str(addr)
        return direct(scope)

    key.__name__ = key.__qualname__ = f"forwarded_client(trusted_hops={hops})"
    return key


def _ceil_seconds(seconds: float) -> int:
    """Whole seconds, rounded up, ignoring float noise; never negative; an infinite
    or huge value is capped at 100 years (a header must carry an integer), NaN is 0."""
    if not seconds < check.MAX_SECONDS:
        return 0 if seconds != seconds else int(check.MAX_SECONDS)
    return max(0, math.ceil(seconds - _EPS))


def _sf_string(value: str) -> str:
    """``value`` as a Structured Field String (RFC 8941 section 3.3.3).

    ``"`` and ``\\`` are escaped; characters outside printable ASCII (which an
    sf-string cannot hold) are percent-encoded as UTF-8, and so is ``%``, so distinct
    names stay distinct.
    """
    out = ['"']
    for ch in value:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 0x20 <= code <= 0x7E and ch != "%":
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
    out.append('"')
    return "".join(out)


def rate_limit_headers(decision: Decision, mode: HeadersMode = "draft") -> list[Header]:
    """The rate-limit response headers for ``decision``, ASGI style (lowercase bytes).

    This is what the middleware adds; it is public for frameworks that build their
    responses themselves. ``Retry-After`` is not included (see the module docs).
    """
    if mode not in _HEADERS_MODES:
        raise ConfigurationError(
            f"headers must be one of {', '.join(map(repr, _HEADERS_MODES))}, got {mode!r}"
        )
    out: list[Header] = []
    if mode == "none":
        return out
    reset = _ceil_seconds(decision.reset_after)
    remaining = max(0, decision.remaining)
    if mode in ("draft", "both"):
        name = _sf_string(decision.policy)
        window = max(1, math.ceil(decision.period - _EPS))
        t = reset
        if not decision.allowed and math.isfinite(decision.retry_after):
            t = _retry_after_seconds(decision.retry_after)
        out.append((b"ratelimit-policy", f"{name};q={decision.limit};w={window}".encode()))
        out.append((b"ratelimit", f"{name};r={remaining};t={t}".encode()))
    if mode in ("legacy", "both"):
        out.append((b"x-ratelimit-limit", str(decision.limit).encode()))
        out.append((b"x-ratelimit-remaining", str(remaining).encode()))
        out.append((b"x-ratelimit-reset", str(reset).encode()))
    return out


def _retry_after_seconds(retry_after: float) -> int:
    return max(1, _ceil_seconds(retry_after))


class RateLimitMiddleware:
    """Rate-limit HTTP requests to ``app``; a denied request gets a 429.

    ``limiter``: a :class:`RateLimiter`, or a list of them: every one is hit, and a
    request refused by one is refunded to those before it (all or nothing); the
    headers report the most restrictive decision; only the first may be tiered.
    ``key(scope)``: the rate-limit key; ``None`` falls back to the client address,
    never to "unlimited" (default: :func:`client_address`).
    ``cost``: units per request, an int or ``cost(scope)``. ``tier``: ``None``, a tier
    name, or ``tier(scope)``; required for a tiered limiter, refused for a plain one.
    ``key``, ``cost`` and ``tier`` callables may be ``async``. ``default_tier``: the
    tier for a ``tier(scope)`` that names none of the limiter's (default ``None``:
    answer 400). ``headers``: ``"draft"`` (default), ``"legacy"``, ``"both"`` or
    ``"none"``. ``exempt(scope)``: true to let a request through uncounted.
    ``on_deny(scope, decision)``: an ASGI app (sync or async factory) that answers a
    refused request instead of the default JSON 429; ``Retry-After`` and the rate-limit
    headers are added to its response unless it set them. See the module docstring.
    """

    __slots__ = (
        "_cost",
        "_default_tier",
        "_headers",
        "_key",
        "_tier",
        "_tiers",
        "app",
        "exempt",
        "limiter",
        "on_deny",
        "others",
    )

    def __init__(
        self,
        app: ASGIApp,
        limiter: RateLimiter | Sequence[RateLimiter],
        *,
        key: Callable[[Scope], str | Awaitable[str | None] | None] = client_address,
        cost: int | Callable[[Scope], int | Awaitable[int]] = 1,
        tier: str | Callable[[Scope], str | Awaitable[str]] | None = None,
        default_tier: str | None = None,
        headers: HeadersMode = "draft",
        exempt: Callable[[Scope], bool] | None = None,
        on_deny: Callable[[Scope, Decision], ASGIApp | Awaitable[ASGIApp]] | None = None,
    ) -> None:
        if not callable(app):
            raise ConfigurationError(f"app must be an ASGI application, got {app!r}")
        limiters: list[RateLimiter] = (
            list(limiter) if isinstance(limiter, list | tuple) else [limiter]  # type: ignore[list-item]
        )
        if not limiters:
            raise ConfigurationError("limiter must be a limiter or a non-empty list of them")
        for lim in limiters:
            if not isinstance(lim, RateLimiter):
                raise ConfigurationError(f"limiter must be a RateLimiter, got {lim!r}")
        first, others = limiters[0], limiters[1:]
        for other in others:
            if other.tiers is not None:
                raise ConfigurationError(
                    "only the first of several limiters may be tiered (the tier names its "
                    f"policy); got a tiered {other!r} after it"
                )
        if on_deny is not None and not callable(on_deny):
            raise ConfigurationError(
                f"on_deny must be None or a callable(scope, decision) -> ASGI app, got {on_deny!r}"
            )
        if not callable(key):
            raise ConfigurationError(f"key must be a callable(scope) -> str | None, got {key!r}")
        if not callable(cost):
            check.count(cost, "cost")
        if tier is not None and not callable(tier) and (not isinstance(tier, str) or not tier):
            raise ConfigurationError(
                f"tier must be None, a tier name or a callable(scope) -> str, got {tier!r}"
            )
        if first.tiers is not None and tier is None:
            raise ConfigurationError(
                "this limiter is tiered; pass tier= (a tier name or a callable(scope) -> str), "
                f"one of {', '.join(map(repr, first.tiers))}"
            )
        if first.tiers is None and tier is not None:
            raise ConfigurationError(
                f"this limiter has no tiers (policy {first.policy}); got tier={tier!r}"
            )
        if isinstance(tier, str) and first.tiers is not None and tier not in first.tiers:
            raise ConfigurationError(
                f"unknown tier {tier!r}; expected one of {', '.join(map(repr, first.tiers))}"
            )
        if default_tier is not None and (
            not callable(tier) or first.tiers is None or default_tier not in first.tiers
        ):
            raise ConfigurationError(
                "default_tier goes with a tier(scope) function and must name one of the "
                f"limiter's tiers ({', '.join(map(repr, first.tiers or ()))}), "
                f"got {default_tier!r}"
            )
        if headers not in _HEADERS_MODES:
            raise ConfigurationError(
                f"headers must be one of {', '.join(map(repr, _HEADERS_MODES))}, got {headers!r}"
            )
        if exempt is not None and not callable(exempt):
            raise ConfigurationError(
                f"exempt must be None or a callable(scope) -> bool, got {exempt!r}"
            )
        self.app = app
        self.limiter = first
        self.others: tuple[RateLimiter, ...] = tuple(others)
        self.on_deny = on_deny
        self.exempt = exempt
        self._key = key
        self._cost = cost
        self._tier = tier
        self._tiers = frozenset(first.tiers) if first.tiers is not None else frozenset()
        self._default_tier = default_tier
        self._headers: HeadersMode = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.exempt is not None and self.exempt(scope)):
            await self.app(scope, receive, send)
            return
        key = await _resolve(self._key(scope))
        if key is None:  # anonymous: the client's address, never unlimited
            key = client_address(scope) or ANONYMOUS
        cost = await _resolve(self._cost(scope)) if callable(self._cost) else self._cost
        tier = self._tier
        if callable(tier):
            tier = self._known_tier(await _resolve(tier(scope)))
            if tier is None:
                await _send_json(send, 400, _UNKNOWN_TIER_BODY, [])
                return
        decision = await _hit(self.limiter, key, cost, tier)
        for other in self.others:  # every limiter spends, or none does
            if not decision.allowed:
                break
            d = await _hit(other, key, cost, None)
            if not d.allowed:
                await _refund_all(self, key, cost, tier, upto=other)
                decision = d
            elif d.remaining < decision.remaining:
                decision = d
        extra = rate_limit_headers(decision, self._headers)
        if not decision.allowed:
            await self._deny(scope, receive, decision, extra, send)
            return
        if not extra:
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, _with_headers(send, extra))

    def _known_tier(self, tier: object) -> str | None:
        """A tier from ``tier(scope)`` (often the client's say): one of the limiter's,
        else ``default_tier`` (``None``: the request gets a 400)."""
        if isinstance(tier, str):
            name = str.__str__(tier)  # a StrEnum member is its value
            if name in self._tiers:
                return name
        return self._default_tier

    async def _deny(
        self, scope: Scope, receive: Receive, decision: Decision, extra: list[Header], send: Send
    ) -> None:
        headers: list[Header] = []
        if math.isfinite(decision.retry_after):
            retry = _retry_after_seconds(decision.retry_after)
            headers.append((b"retry-after", str(retry).encode()))
        headers.extend(extra)
        if self.on_deny is None:
            await _send_json(send, 429, _DENIED_BODY, headers)
            return
        # the application's own 429 (any ASGI app, e.g. a Starlette JSONResponse); the
        # Retry-After and rate-limit headers are added unless it set them itself
        response = await _resolve(self.on_deny(scope, decision))
        await response(scope, receive, _with_headers(send, headers, replace=True))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.app!r}, {self.limiter!r}, headers={self._headers!r})"


#: the key of requests that have neither a key nor a client address (a Unix socket)
ANONYMOUS = "anonymous"


async def _resolve(value: Any) -> Any:
    """``value``, awaited if it is awaitable: key, tier, cost and on_deny may be async."""
    if inspect.isawaitable(value):
        return await value
    return value


async def _hit(limiter: RateLimiter, key: str, cost: int, tier: str | None) -> Decision:
    return await limiter.ahit(key, cost, tier=tier)


async def _refund_all(
    mw: RateLimitMiddleware,
    key: str,
    cost: int,
    tier: str | None,
    *,
    upto: RateLimiter,
) -> None:
    """Give back what the limiters before ``upto`` spent for a request that a later
    limiter refused (all or nothing across limiters)."""
    for limiter, t in ((mw.limiter, tier), *((o, None) for o in mw.others)):
        if limiter is upto:
            return
        await limiter.arefund(key, cost, tier=t)


def _with_headers(send: Send, extra: list[Header], *, replace: bool = False) -> Send:
    """``send`` that adds ``extra`` to the response start (``replace``: ours give way
    to headers of the same name the app set itself)."""
    started = False

    async def sender(message: Message) -> None:
        nonlocal started
        if not started and message["type"] == "http.response.start":
            started = True
            message = dict(message)
            own = list(message.get("headers") or ())
            if replace:
                names = {bytes(n).lower() for n, _ in own}
                message["headers"] = own + [h for h in extra if h[0] not in names]
            else:
                message["headers"] = _merge(own, extra)
        await send(message)

    return sender


async def _send_json(send: Send, status: int, body: bytes, extra: list[Header]) -> None:
    headers: list[Header] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _merge(app_headers: Iterable[Header], extra: list[Header]) -> list[Header]:
    """The app's headers, then ours; a legacy header the app set itself wins.

    Draft headers are always appended: repeated ``RateLimit`` / ``RateLimit-Policy``
    fields are one structured-field list, so an app's own policies combine with ours.
    """
    merged = list(app_headers)
    present = {name.lower() for name, _ in merged if name.lower() in _LEGACY_NAMES}
    merged.extend(h for h in extra if h[0] not in present)
    return merged

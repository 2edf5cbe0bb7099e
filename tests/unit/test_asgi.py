"""RateLimitMiddleware, driven by a hand-rolled ASGI client (no Starlette needed)."""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scalekit.errors import ConfigurationError
from scalekit.ratelimit import Policy, Rate, RateLimiter
from scalekit.ratelimit._decision import Decision
from scalekit.ratelimit.asgi import (
    Message,
    RateLimitMiddleware,
    Receive,
    Scope,
    Send,
    client_address,
    client_network,
    forwarded_client,
    rate_limit_headers,
)
from scalekit.testing import FakeClock

# A multiple of every period used below, so fixed windows start exactly at "now".
START = 1_200_000.0

Limiter = RateLimiter
MakeLimiter = Callable[..., Limiter]


# -- a tiny ASGI test driver ---------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def get(self, name: str) -> str | None:
        values = self.get_all(name)
        assert len(values) <= 1, f"{name} sent {len(values)} times: {values}"
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        key = name.lower().encode()
        return [v.decode("latin-1") for k, v in self.headers if k.lower() == key]

    def names(self) -> list[bytes]:
        return [k for k, _ in self.headers]


def http_scope(
    path: str = "/",
    *,
    method: str = "GET",
    client: tuple[str, int] | None = ("10.0.0.1", 50000),
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": list(headers),
        "client": client,
        "server": ("testserver", 80),
    }


async def call(app: Any, scope: Scope) -> Response:
    """Run one HTTP request through ``app`` and collect the response."""
    request_sent = False

    async def receive() -> Message:
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.disconnect"}

    messages: list[Message] = []

    async def send(message: Message) -> None:
        messages.append(message)

    await app(scope, receive, send)
    assert messages, "the app sent nothing"
    start, *rest = messages
    assert start["type"] == "http.response.start"
    assert all(m["type"] == "http.response.body" for m in rest)
    assert not rest[-1].get("more_body", False)
    return Response(
        start["status"],
        [(bytes(k), bytes(v)) for k, v in start.get("headers", [])],
        b"".join(m.get("body", b"") for m in rest),
    )


async def get(app: Any, path: str = "/", **kwargs: Any) -> Response:
    return await call(app, http_scope(path, **kwargs))


@dataclass
class App:
    """An inner ASGI app that records the scopes it was called with."""

    status: int = 200
    headers: list[tuple[bytes, bytes]] = field(
        default_factory=lambda: [(b"content-type", b"text/plain"), (b"x-app", b"yes")]
    )
    body: bytes = b"hello"
    calls: list[Scope] = field(default_factory=list)
    sent: list[Message] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls.append(scope)
        start = {"type": "http.response.start", "status": self.status, "headers": self.headers}
        self.sent.append(start)
        await send(start)
        await send({"type": "http.response.body", "body": self.body[:2], "more_body": True})
        await send({"type": "http.response.body", "body": self.body[2:]})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def make_limiter(clock: FakeClock) -> MakeLimiter:
    """Build a limiter on memory (the middleware awaits its ``ahit`` / ``arefund``)."""

    def make(policy: Any = "3/minute", algorithm: str = "fixed_window") -> Limiter:
        return RateLimiter("memory://", policy, algorithm=algorithm, clock=clock)  # type: ignore[arg-type]

    return make


# -- allowed and denied ----------------------------------------------------------------


async def test_allowed_requests_reach_the_app_with_draft_headers(
    make_limiter: MakeLimiter,
) -> None:
    app = App()
    mw = RateLimitMiddleware(app, make_limiter("3/minute"))
    for remaining in (2, 1, 0):
        r = await get(mw)
        assert r.status == 200
        assert r.body == b"hello"
        assert r.get("RateLimit-Policy") == '"3/minute";q=3;w=60'
        assert r.get("RateLimit") == f'"3/minute";r={remaining};t=60'
        assert r.get("Retry-After") is None
        assert r.get("X-RateLimit-Limit") is None  # default is draft only
    assert len(app.calls) == 3


async def test_the_request_over_the_limit_gets_429_and_never_reaches_the_app(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    app = App()
    mw = RateLimitMiddleware(app, make_limiter("3/minute"))
    for _ in range(3):
        assert (await get(mw)).status == 200
    clock.advance(10.5)
    r = await get(mw)
    assert r.status == 429
    assert len(app.calls) == 3
    assert r.get("Retry-After") == "50"  # 49.5 s left in the window, rounded up
    assert r.get("RateLimit-Policy") == '"3/minute";q=3;w=60'
    assert r.get("RateLimit") == '"3/minute";r=0;t=50'
    assert r.get("content-type") == "application/json"
    assert json.loads(r.body) == {"detail": "Too Many Requests"}
    assert r.get("content-length") == str(len(r.body))
    assert b"x-app" not in r.names()


async def test_advancing_the_clock_lets_the_key_in_again(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    app = App()
    mw = RateLimitMiddleware(app, make_limiter("2/minute"))
    await get(mw)
    await get(mw)
    denied = await get(mw)
    assert denied.status == 429
    clock.advance(int(denied.get("Retry-After") or "0") - 1)
    assert (await get(mw)).status == 429  # one second early: still denied
    clock.advance(1)
    r = await get(mw)
    assert r.status == 200
    assert r.get("RateLimit") == '"2/minute";r=1;t=60'
    assert len(app.calls) == 3


async def test_sliding_window_429_retry_after_is_not_before_the_effective_window(
    make_limiter: MakeLimiter,
) -> None:
    # sliding window, 3 hits at the window start: the window is only back to full in
    # 120 s, but a 4th hit fits after 80 s. RateLimit's t follows Retry-After on a 429.
    mw = RateLimitMiddleware(App(), make_limiter("3/minute", "sliding_window"), headers="both")
    for _ in range(3):
        await get(mw)
    r = await get(mw)
    assert r.status == 429
    assert r.get("Retry-After") == "80"
    assert r.get("RateLimit") == '"3/minute";r=0;t=80'
    assert r.get("X-RateLimit-Reset") == "120"


async def test_retry_after_is_at_least_one_second(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    mw = RateLimitMiddleware(App(), make_limiter("1/minute"))
    await get(mw)
    clock.advance(59.9)
    r = await get(mw)
    assert r.status == 429
    assert r.get("Retry-After") == "1"
    assert r.get("RateLimit") == '"1/minute";r=0;t=1'


class ScriptedLimiter(RateLimiter):
    """Answers every hit with a given decision, to reach edge values exactly."""

    def __init__(self, decision: Decision) -> None:
        super().__init__("memory://", "1/second")
        self.decision = decision

    async def ahit(self, key: str, cost: int = 1, *, tier: str | None = None) -> Decision:
        return self.decision


async def test_retry_after_never_rounds_down_to_zero() -> None:
    tiny = Decision(False, 5, 0, 1e-7, 1e-7, "p", 1.0)
    r = await get(RateLimitMiddleware(App(), ScriptedLimiter(tiny)))
    assert r.status == 429
    assert r.get("Retry-After") == "1"
    assert r.get("RateLimit") == '"p";r=0;t=1'


async def test_cost_above_the_limit_omits_retry_after_and_consumes_nothing(
    make_limiter: MakeLimiter,
) -> None:
    app = App()
    mw = RateLimitMiddleware(
        app, make_limiter("3/minute"), cost=lambda s: 10 if s["method"] == "POST" else 1
    )
    r = await get(mw, method="POST")
    assert r.status == 429
    assert r.get("Retry-After") is None  # retry_after is infinite: no retry helps
    assert r.get("RateLimit") == '"3/minute";r=3;t=60'
    assert app.calls == []
    ok = await get(mw)
    assert ok.status == 200
    assert ok.get("RateLimit") == '"3/minute";r=2;t=60'


async def test_cost_callable_is_charged_per_request(make_limiter: MakeLimiter) -> None:
    app = App()
    mw = RateLimitMiddleware(
        app, make_limiter("5/minute"), cost=lambda s: 2 if s["method"] == "POST" else 1
    )
    assert (await get(mw, method="POST")).get("RateLimit") == '"5/minute";r=3;t=60'
    assert (await get(mw, method="POST")).get("RateLimit") == '"5/minute";r=1;t=60'
    denied = await get(mw, method="POST")
    assert denied.status == 429
    assert denied.get("RateLimit") == '"5/minute";r=1;t=60'
    ok = await get(mw, method="GET")
    assert ok.status == 200
    assert ok.get("RateLimit") == '"5/minute";r=0;t=60'
    assert [s["method"] for s in app.calls] == ["POST", "POST", "GET"]


async def test_constant_cost(make_limiter: MakeLimiter) -> None:
    mw = RateLimitMiddleware(App(), make_limiter("5/minute"), cost=2)
    assert (await get(mw)).get("RateLimit") == '"5/minute";r=3;t=60'
    assert (await get(mw)).get("RateLimit") == '"5/minute";r=1;t=60'
    assert (await get(mw)).status == 429


# -- the app's response ------------------------------------------------------------------


async def test_app_status_headers_and_body_are_preserved(make_limiter: MakeLimiter) -> None:
    app_headers = [
        (b"content-type", b"text/csv"),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
        (b"x-app", b"yes"),
    ]
    app = App(status=201, headers=list(app_headers), body=b"a,b\n1,2\n")
    mw = RateLimitMiddleware(app, make_limiter("3/minute"), headers="both")
    r = await get(mw)
    assert r.status == 201
    assert r.body == b"a,b\n1,2\n"
    assert r.headers[: len(app_headers)] == app_headers  # kept, in order, first
    assert r.names()[len(app_headers) :] == [
        b"ratelimit-policy",
        b"ratelimit",
        b"x-ratelimit-limit",
        b"x-ratelimit-remaining",
        b"x-ratelimit-reset",
    ]
    # the app's own message object was not modified in place
    assert app.sent[0]["headers"] == app_headers


async def test_response_start_without_headers_key(make_limiter: MakeLimiter) -> None:
    async def bare(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 204})
        await send({"type": "http.response.body"})

    r = await get(RateLimitMiddleware(bare, make_limiter("3/minute")))
    assert r.status == 204
    assert r.names() == [b"ratelimit-policy", b"ratelimit"]


async def test_app_own_legacy_headers_win_and_draft_fields_combine(
    make_limiter: MakeLimiter,
) -> None:
    app = App(
        headers=[
            (b"X-RateLimit-Limit", b"999"),
            (b"ratelimit", b'"inner";r=7;t=1'),
        ]
    )
    mw = RateLimitMiddleware(app, make_limiter("3/minute"), headers="both")
    r = await get(mw)
    assert r.get_all("x-ratelimit-limit") == ["999"]
    assert r.get("x-ratelimit-remaining") == "2"
    assert r.get_all("ratelimit") == ['"inner";r=7;t=1', '"3/minute";r=2;t=60']


# -- header modes ----------------------------------------------------------------------


async def test_legacy_headers(make_limiter: MakeLimiter, clock: FakeClock) -> None:
    mw = RateLimitMiddleware(App(), make_limiter("2/minute"), headers="legacy")
    r = await get(mw)
    assert r.get("X-RateLimit-Limit") == "2"
    assert r.get("X-RateLimit-Remaining") == "1"
    assert r.get("X-RateLimit-Reset") == "60"
    assert r.get("RateLimit") is None
    assert r.get("RateLimit-Policy") is None
    await get(mw)
    clock.advance(30)
    denied = await get(mw)
    assert denied.status == 429
    assert denied.get("Retry-After") == "30"
    assert denied.get("X-RateLimit-Remaining") == "0"
    assert denied.get("X-RateLimit-Reset") == "30"


async def test_both_headers(make_limiter: MakeLimiter) -> None:
    mw = RateLimitMiddleware(App(), make_limiter("2/minute"), headers="both")
    r = await get(mw)
    assert r.get("RateLimit-Policy") == '"2/minute";q=2;w=60'
    assert r.get("RateLimit") == '"2/minute";r=1;t=60'
    assert r.get("X-RateLimit-Limit") == "2"
    assert r.get("X-RateLimit-Remaining") == "1"
    assert r.get("X-RateLimit-Reset") == "60"


async def test_no_headers_mode_still_limits_and_sends_retry_after(
    make_limiter: MakeLimiter,
) -> None:
    app = App()
    mw = RateLimitMiddleware(app, make_limiter("1/minute"), headers="none")
    ok = await get(mw)
    assert ok.headers == app.headers
    denied = await get(mw)
    assert denied.status == 429
    assert denied.get("Retry-After") == "60"
    assert not any(n.startswith((b"ratelimit", b"x-ratelimit")) for n in denied.names())


async def test_policy_name_is_escaped_as_an_sf_string(make_limiter: MakeLimiter) -> None:
    policy = Policy(["3/minute"], name='say "hi" \\ 50%')
    r = await get(RateLimitMiddleware(App(), make_limiter(policy)))
    assert r.get("RateLimit-Policy") == '"say \\"hi\\" \\\\ 50%25";q=3;w=60'
    assert r.get("RateLimit") == '"say \\"hi\\" \\\\ 50%25";r=2;t=60'


async def test_non_ascii_tier_name_is_percent_encoded(make_limiter: MakeLimiter) -> None:
    mw = RateLimitMiddleware(App(), make_limiter({"grün": "3/minute"}), tier="grün")
    r = await get(mw)
    assert r.get("RateLimit-Policy") == '"gr%C3%BCn";q=3;w=60'
    r.headers[-1][1].decode("ascii")  # header values are plain ASCII


async def test_sub_second_and_fractional_windows_round_up(clock: FakeClock) -> None:
    limiter = RateLimiter("memory://", Rate(2, 1.5), algorithm="sliding_log", clock=clock)
    r = await get(RateLimitMiddleware(App(), limiter))
    assert r.get("RateLimit-Policy") == '"2/1.5 seconds";q=2;w=2'
    assert r.get("RateLimit") == '"2/1.5 seconds";r=1;t=2'
    limiter = RateLimiter("memory://", Rate(5, 0.25), algorithm="sliding_log", clock=clock)
    r = await get(RateLimitMiddleware(App(), limiter))
    assert r.get("RateLimit-Policy") == '"5/0.25 seconds";q=5;w=1'


# -- what is limited -------------------------------------------------------------------


async def test_default_key_is_the_client_address(make_limiter: MakeLimiter) -> None:
    app = App()
    mw = RateLimitMiddleware(app, make_limiter("1/minute"))
    assert (await get(mw, client=("10.0.0.1", 1))).status == 200
    assert (await get(mw, client=("10.0.0.1", 2))).status == 429  # same host, other port
    assert (await get(mw, client=("10.0.0.2", 1))).status == 200
    assert len(app.calls) == 2


async def test_requests_without_a_client_share_the_anonymous_bucket(
    make_limiter: MakeLimiter,
) -> None:
    """No key and no client address (a Unix socket): one shared "anonymous" bucket,
    never unlimited (it used to pass uncounted)."""
    app = App()
    limiter = make_limiter("2/minute")
    mw = RateLimitMiddleware(app, limiter)
    assert [(await get(mw, client=None)).status for _ in range(3)] == [200, 200, 429]
    assert len(app.calls) == 2
    assert client_address(http_scope(client=None)) is None
    assert client_address(http_scope(client=("::1", 9))) == "::/64"


async def test_key_none_falls_back_to_the_client_address(make_limiter: MakeLimiter) -> None:
    """An anonymous request (the key function says None) is limited by its address;
    use ``exempt`` to let requests through uncounted."""
    app = App()
    limiter = make_limiter("1/minute")

    def by_token(scope: Scope) -> str | None:
        token = dict(scope["headers"]).get(b"authorization")
        return token.decode() if token else None

    mw = RateLimitMiddleware(app, limiter, key=by_token)
    assert (await get(mw, client=("10.0.0.1", 1))).status == 200
    assert (await get(mw, client=("10.0.0.1", 2))).status == 429  # same address
    assert (await get(mw, client=("10.0.0.2", 1))).status == 200  # another address
    tok = [(b"authorization", b"tok")]
    assert (await get(mw, headers=tok)).status == 200
    assert (await get(mw, headers=tok)).status == 429


async def test_async_key_tier_and_cost(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter({"free": "2/minute", "paid": "10/minute"})
    lookups: list[str] = []

    async def key(scope: Scope) -> str:
        return dict(scope["headers"])[b"x-user"].decode()

    async def tier(scope: Scope) -> str:
        user = dict(scope["headers"])[b"x-user"].decode()
        lookups.append(user)
        return "paid" if user.startswith("p") else "free"

    async def cost(scope: Scope) -> int:
        return 5 if scope["method"] == "POST" else 1

    mw = RateLimitMiddleware(App(), limiter, key=key, tier=tier, cost=cost)
    free = [(b"x-user", b"f1")]
    paid = [(b"x-user", b"p1")]
    assert [(await get(mw, headers=free)).status for _ in range(3)] == [200, 200, 429]
    assert (await call(mw, http_scope(method="POST", headers=paid))).status == 200
    assert (await call(mw, http_scope(method="POST", headers=paid))).status == 200
    assert (await call(mw, http_scope(method="POST", headers=paid))).status == 429
    assert lookups == ["f1"] * 3 + ["p1"] * 3


async def test_several_limiters_spend_all_or_nothing(make_limiter: MakeLimiter) -> None:
    burst = make_limiter("2/minute")
    daily = make_limiter("3/day")
    mw = RateLimitMiddleware(App(), [burst, daily], key=lambda s: "u")
    got = [(await get(mw)).status for _ in range(3)]
    assert got == [200, 200, 429]  # the burst limit refused the third
    # the refused request spent nothing of the daily limit: one unit is left there
    left = daily.peek("u")
    if inspect.isawaitable(left):
        left = await left
    assert left.remaining == 1
    with pytest.raises(ConfigurationError, match="non-empty"):
        RateLimitMiddleware(App(), [])


async def test_a_custom_429_response(make_limiter: MakeLimiter) -> None:
    seen: list[float] = []

    def on_deny(scope: Scope, decision: Decision) -> Any:
        seen.append(decision.retry_after)

        async def teapot(scope: Scope, receive: Receive, send: Send) -> None:
            await send(
                {
                    "type": "http.response.start",
                    "status": 429,
                    "headers": [(b"content-type", b"text/plain"), (b"retry-after", b"99")],
                }
            )
            await send({"type": "http.response.body", "body": b"slow down"})

        return teapot

    mw = RateLimitMiddleware(App(), make_limiter("1/minute"), key=lambda s: "k", on_deny=on_deny)
    assert (await get(mw)).status == 200
    r = await get(mw)
    assert (r.status, r.body) == (429, b"slow down")
    assert r.get("Retry-After") == "99"  # the app's own header wins
    assert r.get("RateLimit") is not None  # ours are added
    assert len(seen) == 1 and seen[0] > 0


def test_forwarded_client_trusts_only_the_proxies_hops() -> None:
    key = forwarded_client(trusted_hops=1)
    xff = [(b"x-forwarded-for", b"6.6.6.6, 203.0.113.7")]
    # the proxy appended 203.0.113.7; whatever the client wrote before it is ignored
    assert key(http_scope(headers=xff)) == "203.0.113.7"
    assert forwarded_client(trusted_hops=2)(http_scope(headers=xff)) == "6.6.6.6"
    two = [(b"x-forwarded-for", b"1.1.1.1"), (b"X-Forwarded-For", b"2001:db8:1:2::9")]
    assert key(http_scope(headers=two)) == "2001:db8:1:2::/64"
    # fewer entries than trusted hops, or garbage: the connection's own address
    assert forwarded_client(trusted_hops=3)(http_scope(headers=xff)) == "10.0.0.1"
    assert key(http_scope(headers=[(b"x-forwarded-for", b"not-an-ip")])) == "10.0.0.1"
    assert key(http_scope()) == "10.0.0.1"
    with pytest.raises(ConfigurationError):
        forwarded_client(trusted_hops=0)


async def test_exempt_requests_are_not_counted(make_limiter: MakeLimiter) -> None:
    app = App()
    mw = RateLimitMiddleware(
        app, make_limiter("2/minute"), exempt=lambda s: s["path"].startswith("/health")
    )
    for _ in range(5):
        r = await get(mw, "/healthz")
        assert r.status == 200
        assert r.get("RateLimit") is None
    assert (await get(mw, "/api")).get("RateLimit") == '"2/minute";r=1;t=60'
    assert (await get(mw, "/api")).status == 200
    assert (await get(mw, "/api")).status == 429
    assert (await get(mw, "/health")).status == 200  # still exempt once limited
    assert [s["path"] for s in app.calls] == ["/healthz"] * 5 + ["/api", "/api", "/health"]


async def test_exempt_is_checked_before_the_key(make_limiter: MakeLimiter) -> None:
    def key(scope: Scope) -> str:
        raise AssertionError("key() called for an exempt request")

    mw = RateLimitMiddleware(App(), make_limiter(), key=key, exempt=lambda s: True)
    assert (await get(mw)).status == 200


async def test_tiers_are_chosen_per_request(make_limiter: MakeLimiter) -> None:
    app = App()

    def plan(scope: Scope) -> str:
        return "paid" if (b"x-plan", b"paid") in scope["headers"] else "free"

    mw = RateLimitMiddleware(
        app,
        make_limiter({"free": "1/minute", "paid": "3/minute"}),
        key=lambda s: dict(s["headers"])[b"x-user"].decode(),
        tier=plan,
    )
    alice = [(b"x-user", b"alice")]
    bob = [(b"x-user", b"bob"), (b"x-plan", b"paid")]
    r = await get(mw, headers=alice)
    assert r.get("RateLimit-Policy") == '"free";q=1;w=60'
    assert r.get("RateLimit") == '"free";r=0;t=60'
    denied = await get(mw, headers=alice)
    assert denied.status == 429
    assert denied.get("RateLimit-Policy") == '"free";q=1;w=60'
    for remaining in (2, 1, 0):
        r = await get(mw, headers=bob)
        assert r.status == 200
        assert r.get("RateLimit-Policy") == '"paid";q=3;w=60'
        assert r.get("RateLimit") == f'"paid";r={remaining};t=60'
    assert (await get(mw, headers=bob)).status == 429
    assert len(app.calls) == 4


async def test_fixed_tier_name(make_limiter: MakeLimiter) -> None:
    mw = RateLimitMiddleware(App(), make_limiter({"a": "1/minute", "b": "2/minute"}), tier="b")
    assert (await get(mw)).get("RateLimit") == '"b";r=1;t=60'


# -- other scope types ------------------------------------------------------------------


async def test_lifespan_passes_through_untouched(make_limiter: MakeLimiter) -> None:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)
        assert scope["type"] == "lifespan"
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    def key(scope: Scope) -> str:
        raise AssertionError("key() called for a lifespan scope")

    limiter = make_limiter("1/minute")
    mw = RateLimitMiddleware(app, limiter, key=key)
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return inbox.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    await mw(scope, receive, send)
    assert seen == [scope]
    assert seen[0] is scope
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
    assert limiter.stats()["allowed"] == 0


async def test_websocket_passes_through_unlimited(make_limiter: MakeLimiter) -> None:
    sent: list[Message] = []
    calls = 0

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal calls
        calls += 1
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    limiter = make_limiter("1/minute")
    mw = RateLimitMiddleware(app, limiter)
    for _ in range(3):
        scope = {"type": "websocket", "path": "/ws", "client": ("10.0.0.1", 1), "headers": []}
        await mw(scope, receive, send)
    assert calls == 3
    assert sent == [{"type": "websocket.accept"}] * 3
    assert limiter.stats()["allowed"] == 0
    http = RateLimitMiddleware(App(), limiter)
    assert (await get(http, client=("10.0.0.1", 1))).status == 200  # quota untouched


# -- construction ------------------------------------------------------------------------


def test_constructed_like_starlette_add_middleware(clock: FakeClock) -> None:
    # Starlette builds middleware as cls(app, *args, **kwargs).
    limiter = RateLimiter("memory://", "1/minute", clock=clock)
    kwargs: dict[str, Any] = {"limiter": limiter, "key": client_address, "headers": "legacy"}
    mw = RateLimitMiddleware(App(), **kwargs)
    assert mw.limiter is limiter


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"headers": "ietf"}, "headers must be one of"),
        ({"cost": 0}, "cost must be"),
        ({"cost": True}, "cost must be"),
        ({"cost": "1"}, "cost must be"),
        ({"cost": 10**13}, "cost must be at most"),
        ({"key": "user:1"}, "key must be a callable"),
        ({"exempt": True}, "exempt must be"),
        ({"tier": "free"}, "has no tiers"),
    ],
)
def test_bad_options_are_refused(clock: FakeClock, kwargs: dict[str, Any], match: str) -> None:
    limiter = RateLimiter("memory://", "1/minute", clock=clock)
    with pytest.raises(ConfigurationError, match=match):
        RateLimitMiddleware(App(), limiter, **kwargs)


def test_tiered_limiter_needs_a_known_tier(clock: FakeClock) -> None:
    limiter = RateLimiter("memory://", {"free": "1/minute"}, clock=clock)
    with pytest.raises(ConfigurationError, match="tiered"):
        RateLimitMiddleware(App(), limiter)
    with pytest.raises(ConfigurationError, match="unknown tier 'gold'"):
        RateLimitMiddleware(App(), limiter, tier="gold")


def test_limiter_must_be_a_limiter() -> None:
    with pytest.raises(ConfigurationError, match="limiter must be"):
        RateLimitMiddleware(App(), "1/minute")  # type: ignore[arg-type]


@pytest.mark.parametrize("named", ["gold", "", None, 7, b"free", "free\x00"])
async def test_an_unknown_tier_from_the_client_is_a_400_never_a_500(
    make_limiter: MakeLimiter, named: object
) -> None:
    app = App()
    limiter = make_limiter({"free": "1/minute"})
    mw = RateLimitMiddleware(app, limiter, tier=lambda s: named)  # type: ignore[arg-type,return-value]
    r = await get(mw)
    assert r.status == 400
    assert json.loads(r.body) == {"detail": "Unknown tier"}
    assert r.get("content-length") == str(len(r.body))
    assert app.calls == []
    assert limiter.stats()["allowed"] == limiter.stats()["denied"] == 0


async def test_an_unknown_tier_gets_the_declared_default_tier(make_limiter: MakeLimiter) -> None:
    import enum

    class Plan(enum.StrEnum):
        PAID = "paid"

    app = App()
    limiter = make_limiter({"free": "1/minute", "paid": "2/minute"})

    def plan(scope: Scope) -> str:
        value = dict(scope["headers"]).get(b"x-plan", b"").decode()
        return Plan.PAID if value == "paid" else value

    mw = RateLimitMiddleware(app, limiter, tier=plan, default_tier="free")
    paid = [(b"x-plan", b"paid")]
    assert [(await get(mw, headers=paid)).status for _ in range(3)] == [200, 200, 429]
    forged = [(b"x-plan", b"platinum")]
    assert [(await get(mw, headers=forged)).status for _ in range(2)] == [200, 429]
    assert (await get(mw)).status == 429  # "" is unknown too: the same free quota


def test_default_tier_must_be_a_tier_of_a_tier_function(clock: FakeClock) -> None:
    limiter = RateLimiter("memory://", {"free": "1/minute"}, clock=clock)
    for kwargs in (
        {"tier": lambda s: "free", "default_tier": "gold"},
        {"tier": "free", "default_tier": "free"},
    ):
        with pytest.raises(ConfigurationError, match="default_tier"):
            RateLimitMiddleware(App(), limiter, **kwargs)  # type: ignore[arg-type]
    plain = RateLimiter("memory://", "1/minute", clock=clock)
    with pytest.raises(ConfigurationError):
        RateLimitMiddleware(App(), plain, default_tier="free")


# -- IPv6 clients ------------------------------------------------------------------------


async def test_one_ipv6_64_is_one_key_and_cannot_fill_the_store(clock: FakeClock) -> None:
    """Before: every address of a /64 was a new key; 3 of them filled max_keys=3 and
    every later client (of any network) passed uncounted under fail_open."""
    app = App()
    limiter = RateLimiter("memory://?max_keys=3", "2/minute", clock=clock)
    mw = RateLimitMiddleware(app, limiter)
    statuses = [
        (await get(mw, client=(f"2001:db8:1:2:{i:x}::{i:x}", 1))).status for i in range(1, 50)
    ]
    assert statuses[:2] == [200, 200] and set(statuses[2:]) == {429}
    assert (await get(mw, client=("2001:db8:1:3::1", 1))).status == 200  # another /64
    assert (await get(mw, client=("198.51.100.7", 1))).status == 200
    assert limiter.stats()["refused_full"] == 0


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("198.51.100.7", "198.51.100.7"),
        ("::ffff:198.51.100.7", "198.51.100.7"),  # IPv4-mapped: the IPv4 client it is
        ("::FFFF:c633:6407", "198.51.100.7"),
        ("2001:DB8:0:0:1::1", "2001:db8::/64"),
        ("2001:db8::ffff:ffff:ffff:ffff", "2001:db8::/64"),
        ("2001:db8:0:1::1", "2001:db8:0:1::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("::1", "::/64"),
        ("testclient", "testclient"),  # not an address: as the server gave it
    ],
)
def test_client_address_keys(host: str, key: str) -> None:
    assert client_address(http_scope(client=(host, 1))) == key


def test_client_network_prefix_is_configurable() -> None:
    scope = http_scope(client=("2001:db8:aa:bb:1:2:3:4", 1))
    assert client_network(ipv6_prefix=48)(scope) == "2001:db8:aa::/48"
    assert client_network(ipv6_prefix=128)(scope) == "2001:db8:aa:bb:1:2:3:4/128"
    assert client_network(ipv6_prefix=0)(scope) == "::/0"
    assert client_network(ipv6_prefix=56)(http_scope(client=("10.1.2.3", 1))) == "10.1.2.3"
    assert client_network()(http_scope(client=None)) is None
    for bad in (129, -1, True, 64.0):
        with pytest.raises(ConfigurationError, match="ipv6_prefix"):
            client_network(ipv6_prefix=bad)  # type: ignore[arg-type]


# -- rate_limit_headers ----------------------------------------------------------------


def test_rate_limit_headers_function() -> None:
    d = Decision(True, 10, 4, 12.2, 0.0, "api", 60.0)
    assert rate_limit_headers(d) == [
        (b"ratelimit-policy", b'"api";q=10;w=60'),
        (b"ratelimit", b'"api";r=4;t=13'),
    ]
    assert rate_limit_headers(d, "legacy") == [
        (b"x-ratelimit-limit", b"10"),
        (b"x-ratelimit-remaining", b"4"),
        (b"x-ratelimit-reset", b"13"),
    ]
    assert rate_limit_headers(d, "none") == []
    # float noise does not round a whole second up
    assert rate_limit_headers(d._replace(reset_after=60.000000001))[1][1] == b'"api";r=4;t=60'
    denied = d._replace(allowed=False, remaining=0, retry_after=math.inf)
    assert rate_limit_headers(denied)[1][1] == b'"api";r=0;t=13'
    with pytest.raises(ConfigurationError):
        rate_limit_headers(d, "bogus")  # type: ignore[arg-type]


@given(st.ip_addresses(v=6), st.integers(0, 2**64 - 1))
def test_every_address_of_a_64_has_the_key_of_the_64(addr: Any, low: int) -> None:
    import ipaddress

    if addr.ipv4_mapped is not None:
        return
    net = int(addr) >> 64 << 64
    sibling = ipaddress.IPv6Address(net | low)
    key = client_address(http_scope(client=(str(addr), 1)))
    assert key == client_address(http_scope(client=(str(sibling), 1)))
    assert key == f"{ipaddress.IPv6Address(net)}/64"
    other = ipaddress.IPv6Address((net + (1 << 64)) % (1 << 128))
    if other.ipv4_mapped is None:
        assert client_address(http_scope(client=(str(other), 1))) != key


@given(st.ip_addresses(v=4))
def test_ipv4_and_its_mapped_form_share_a_key(addr: Any) -> None:
    key = client_address(http_scope(client=(str(addr), 1)))
    assert key == str(addr)
    assert client_address(http_scope(client=(f"::ffff:{addr}", 1))) == key

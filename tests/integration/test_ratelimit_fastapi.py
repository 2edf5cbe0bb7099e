"""The FastAPI dependency, driven through httpx's ASGI transport (no ports), on memory and Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import Depends, FastAPI, Request

from scalekit.errors import ConfigurationError
from scalekit.ratelimit import Decision, RateLimiter
from scalekit.ratelimit.fastapi import install_handler, limit


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    url: str = request.getfixturevalue("fresh_redis_url")
    return url


def make_app(limiter: RateLimiter, **options: object) -> FastAPI:
    app = FastAPI()
    install_handler(app)

    dependency = limit(limiter, **options)  # type: ignore[arg-type]

    @app.get("/", dependencies=[Depends(dependency)])
    async def root(request: Request) -> dict[str, int]:
        decision: Decision | None = getattr(request.state, "rate_limit", None)
        return {"remaining": -1 if decision is None else decision.remaining}

    return app


async def client_for(app: FastAPI, host: str = "10.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(host, 1234))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


@pytest.fixture
async def closing() -> AsyncIterator[list[httpx.AsyncClient]]:
    clients: list[httpx.AsyncClient] = []
    yield clients
    for c in clients:
        await c.aclose()


async def test_headers_on_success_and_429(backend: str, closing: list[httpx.AsyncClient]) -> None:
    limiter = RateLimiter(backend, "3/hour", name="fa1")
    client = await client_for(make_app(limiter, key=lambda r: r.headers.get("x-user")))
    closing.append(client)
    for expected in (2, 1, 0):
        r = await client.get("/", headers={"x-user": "u1"})
        assert r.status_code == 200 and r.json() == {"remaining": expected}
        name, remaining, reset = r.headers["ratelimit"].split(";")
        assert (name, remaining) == ('"3/hour"', f"r={expected}")
        assert 0 < int(reset.removeprefix("t=")) <= 2 * 3600
        assert r.headers["ratelimit-policy"] == '"3/hour";q=3;w=3600'
    r = await client.get("/", headers={"x-user": "u1"})
    assert r.status_code == 429
    # the sliding window counter: up to 4/3 of an hour when the hour on the wall clock
    # has just begun (the previous hour's hits still weigh); was <= 3600, red from
    # hh:00 to hh:20
    assert 1 <= int(r.headers["retry-after"]) <= 4800
    assert r.headers["ratelimit"].startswith('"3/hour";r=0;')
    # another user is unaffected
    assert (await client.get("/", headers={"x-user": "u2"})).status_code == 200


async def test_async_tier_and_cost(backend: str, closing: list[httpx.AsyncClient]) -> None:
    limiter = RateLimiter(backend, {"free": "2/minute", "paid": "10/minute"}, name="fa2")
    lookups: list[str] = []

    async def plan(request: Request) -> str:
        await asyncio.sleep(0)  # a cached subscription query in real life
        user = request.headers["x-user"]
        lookups.append(user)
        return "paid" if user.startswith("p") else "free"

    async def cost(request: Request) -> int:
        return int(request.headers.get("x-cost", "1"))

    app = make_app(limiter, key=lambda r: r.headers["x-user"], tier=plan, cost=cost)
    client = await client_for(app)
    closing.append(client)
    assert (await client.get("/", headers={"x-user": "f1"})).status_code == 200
    assert (await client.get("/", headers={"x-user": "f1"})).status_code == 200
    assert (await client.get("/", headers={"x-user": "f1"})).status_code == 429
    r = await client.get("/", headers={"x-user": "p1", "x-cost": "9"})
    assert r.status_code == 200 and r.json() == {"remaining": 1}
    assert (await client.get("/", headers={"x-user": "p1", "x-cost": "2"})).status_code == 429
    assert lookups == ["f1", "f1", "f1", "p1", "p1"]


async def test_unknown_tier_is_400_or_default(closing: list[httpx.AsyncClient]) -> None:
    limiter = RateLimiter("memory://", {"free": "1/minute", "paid": "5/minute"}, name="fa3")
    reject = await client_for(make_app(limiter, key="k", tier=lambda r: r.headers["x-plan"]))
    closing.append(reject)
    r = await reject.get("/", headers={"x-plan": "platinum"})
    assert r.status_code == 400
    fallback = await client_for(
        make_app(
            limiter,
            key="k2",
            tier=lambda r: r.headers["x-plan"],
            unknown_tier="default",
            default_tier="free",
        )
    )
    closing.append(fallback)
    assert (await fallback.get("/", headers={"x-plan": "platinum"})).status_code == 200
    assert (await fallback.get("/", headers={"x-plan": "platinum"})).status_code == 429


async def test_anonymous_falls_back_to_the_client_address(
    backend: str, closing: list[httpx.AsyncClient]
) -> None:
    limiter = RateLimiter(backend, "1/minute", name="fa4")
    app = make_app(limiter, key=lambda r: r.headers.get("x-user"))  # None: anonymous
    a = await client_for(app, "10.0.0.1")
    b = await client_for(app, "10.0.0.2")
    closing.extend((a, b))
    assert (await a.get("/")).status_code == 200
    assert (await a.get("/")).status_code == 429  # anonymous is never unlimited
    assert (await b.get("/")).status_code == 200  # another address has its own budget
    # IPv6 clients of one /64 share a budget; another /64 has its own
    c = await client_for(app, "2001:db8:1:2::1")
    d = await client_for(app, "2001:db8:1:2:ffff::9")
    e = await client_for(app, "2001:db8:1:3::1")
    closing.extend((c, d, e))
    assert (await c.get("/")).status_code == 200
    assert (await d.get("/")).status_code == 429
    assert (await e.get("/")).status_code == 200


async def test_exempt(closing: list[httpx.AsyncClient]) -> None:
    limiter = RateLimiter("memory://", "1/minute", name="fa5")
    app = make_app(
        limiter, key="k", exempt=lambda r: r.url.path == "/" and "x-internal" in r.headers
    )
    client = await client_for(app)
    closing.append(client)
    for _ in range(3):
        r = await client.get("/", headers={"x-internal": "1"})
        assert r.status_code == 200 and r.json() == {"remaining": -1}
        assert "ratelimit" not in r.headers
    assert (await client.get("/")).status_code == 200
    assert (await client.get("/")).status_code == 429


def test_bad_configuration() -> None:
    tiered = RateLimiter("memory://", {"free": "1/minute"})
    with pytest.raises(ConfigurationError, match="default_tier"):
        limit(tiered, unknown_tier="default", default_tier="gold")
    with pytest.raises(ConfigurationError, match="unknown_tier"):
        limit(tiered, unknown_tier="ignore")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="headers"):
        limit(tiered, headers="all")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        limit("60/hour")  # type: ignore[arg-type]

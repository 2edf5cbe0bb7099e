"""scalekit.fastapi: every scalekit error answered with its documented status."""

from __future__ import annotations

import math

import httpx
import pytest
from fastapi import FastAPI

from scalekit import RateLimiter
from scalekit.errors import (
    BackendError,
    BulkheadFull,
    CircuitOpenError,
    CursorError,
    DeadlineExceeded,
    MustRefetch,
    PoolExhausted,
    RateLimitExceeded,
    ScalekitError,
)
from scalekit.fastapi import install_exception_handlers
from scalekit.testing import FakeClock


def _rate_limited() -> RateLimitExceeded:
    limiter = RateLimiter("memory://", "1/minute", clock=FakeClock())
    limiter.hit("k")
    decision = limiter.hit("k")
    return RateLimitExceeded(decision, key="k")


_RATE = _rate_limited()
CASES: list[tuple[str, Exception, int, dict[str, str]]] = [
    ("rate", _RATE, 429, {"retry-after": str(math.ceil(_RATE.retry_after))}),
    ("bulkhead", BulkheadFull("db", 4, 0), 429, {}),
    ("breaker", CircuitOpenError("llm", "open", 12.2), 503, {"retry-after": "13"}),
    ("forced", CircuitOpenError("llm", "forced_open", math.inf), 503, {}),
    ("pool", PoolExhausted("pg", size=2, waiters=3, timeout=1.0), 503, {"retry-after": "1"}),
    ("backend", BackendError("redis://:secret@h down"), 503, {}),
    ("deadline", DeadlineExceeded("slow"), 504, {}),
    ("cursor", CursorError("tampered"), 400, {}),
    ("refetch", MustRefetch("purged", reason="retention"), 409, {}),
]


@pytest.fixture
def app() -> FastAPI:
    app = FastAPI()
    install_exception_handlers(app)
    errors = {name: exc for name, exc, _, _ in CASES}

    @app.get("/raise/{name}")
    async def raiser(name: str) -> None:
        raise errors[name]

    @app.get("/other")
    async def other() -> None:
        raise ScalekitError("not mapped")

    return app


@pytest.mark.parametrize(("name", "status", "headers"), [(n, s, h) for n, _, s, h in CASES])
async def test_status_headers_and_body(
    app: FastAPI, name: str, status: int, headers: dict[str, str]
) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get(f"/raise/{name}")
    assert response.status_code == status
    for key, value in headers.items():
        assert response.headers[key] == value
    if not headers:
        assert "retry-after" not in response.headers
    body = response.json()
    assert set(body) <= {"detail", "reason"}
    assert "secret" not in response.text  # messages (URLs, keys) never leak into the body
    if name == "refetch":
        assert body["reason"] == "retention"
    if name == "rate":
        assert "ratelimit-policy" in response.headers or "ratelimit" in response.headers


async def test_unmapped_errors_are_left_alone(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/other")
    assert response.status_code == 500

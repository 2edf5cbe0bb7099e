"""Adopting the rate limiter in a FastAPI app: refunds of failed requests, the startup
check (a closed port, the suite's real Redis), driven through httpx's ASGI transport
and Starlette's TestClient."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI, HTTPException, WebSocket

from scalekit import RedisBackend
from scalekit.errors import BackendError, ConfigurationError
from scalekit.ratelimit import (
    ConcurrencyLimiter,
    RateLimiter,
)
from scalekit.ratelimit.fastapi import install_handler, lifespan_check, limit, limit_message


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    url: str = request.getfixturevalue("fresh_redis_url")
    return url


@pytest.fixture
def closed_url() -> str:
    """A loopback port nothing listens on (bound, then closed), with a password."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"redis://:hunter2@127.0.0.1:{port}/0"


def unreachable(url: str) -> RedisBackend:
    return RedisBackend(url, connect_timeout=0.5, socket_timeout=0.5)


class ModelDown(Exception):
    pass


def chat_app(limiter: RateLimiter, **options: Any) -> FastAPI:
    app = FastAPI()
    install_handler(app)
    dep = Depends(limit(limiter, key=lambda r: r.headers["x-user"], **options))

    @app.post("/messages", dependencies=[dep])
    async def send(fail: str = "") -> dict[str, str]:
        if fail == "503":
            raise HTTPException(503, "the model is overloaded")
        if fail == "400":
            raise HTTPException(400, "bad message")
        if fail == "model":
            raise ModelDown("no answer")
        return {"ok": "sent"}

    @app.exception_handler(ModelDown)
    async def model_down(request: Any, exc: ModelDown) -> Any:
        from fastapi.responses import JSONResponse

        return JSONResponse({"detail": "model down"}, status_code=502)

    return app


@pytest.fixture
async def client_of() -> AsyncIterator[Any]:
    clients: list[httpx.AsyncClient] = []

    def make(app: FastAPI) -> httpx.AsyncClient:
        c = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.aclose()


async def post(client: httpx.AsyncClient, fail: str = "", user: str = "u1") -> int:
    r = await client.post("/messages", params={"fail": fail}, headers={"x-user": user})
    return r.status_code


async def test_a_failed_request_does_not_spend_the_quota(backend: str, client_of: Any) -> None:
    limiter = RateLimiter(backend, "2/hour", name="refund1")
    client = client_of(chat_app(limiter, refund_on=(503, ModelDown)))
    # failures named by refund_on: the quota is given back, every time
    assert [await post(client, "503") for _ in range(5)] == [503] * 5
    assert [await post(client, "model") for _ in range(5)] == [502] * 5
    # another failure spends, like a success
    assert await post(client, "400") == 400
    assert [await post(client) for _ in range(2)] == [200, 429]
    assert await post(client, user="u2") == 200


async def test_a_predicate(backend: str, client_of: Any) -> None:
    limiter = RateLimiter(backend, "1/hour", name="refund2")

    def server_errors(exc: BaseException) -> bool:
        return getattr(exc, "status_code", 0) >= 500

    client = client_of(chat_app(limiter, refund_on=server_errors, cost=1))
    assert [await post(client, "503") for _ in range(3)] == [503] * 3
    assert [await post(client) for _ in range(2)] == [200, 429]


async def test_without_refund_on_failures_spend(client_of: Any) -> None:
    limiter = RateLimiter("memory://", "1/hour", name="refund3")
    client = client_of(chat_app(limiter))
    assert [await post(client, "503") for _ in range(2)] == [503, 429]


async def test_a_sync_memory_limiter_refunds_too(client_of: Any) -> None:
    limiter = RateLimiter("memory://", "1/hour", name="refund4")
    client = client_of(chat_app(limiter, refund_on=[503]))  # type: ignore[arg-type]
    assert [await post(client, "503") for _ in range(2)] == [503, 503]
    assert [await post(client) for _ in range(2)] == [200, 429]


async def test_the_refund_with_redis_down_keeps_the_endpoints_error(
    closed_url: str, client_of: Any
) -> None:
    limiter = RateLimiter(unreachable(closed_url), "1/hour", name="refund5")
    client = client_of(chat_app(limiter, refund_on=(503,)))
    # the hit fails open, the refund degrades without raising: the client sees the 503
    assert [await post(client, "503") for _ in range(2)] == [503, 503]
    assert limiter.stats()["backend_errors"] >= 1


@pytest.mark.parametrize("bad", [503, "503", [True], [object], [99], [600], ValueError])
def test_refund_on_is_checked(bad: Any) -> None:
    limiter = RateLimiter("memory://", "1/hour")
    with pytest.raises(ConfigurationError):
        limit(limiter, refund_on=bad)


# -- the startup check -------------------------------------------------------------


async def test_ping_names_the_redacted_url(closed_url: str) -> None:
    port = closed_url.rsplit(":", 1)[1].split("/")[0]
    for limiter in (
        RateLimiter(unreachable(closed_url), "1/hour", name="chat"),
        ConcurrencyLimiter(unreachable(closed_url), 3, name="uploads"),
    ):
        with pytest.raises(BackendError) as info:
            await limiter.aping()
        text = str(info.value)
        assert f"127.0.0.1:{port}" in text and "hunter2" not in text
        assert repr(limiter.name) in text
    for sync in (
        RateLimiter(unreachable(closed_url), "1/hour", name="chat"),
        ConcurrencyLimiter(unreachable(closed_url), 3, name="uploads"),
    ):
        with pytest.raises(BackendError, match=f"127.0.0.1:{port}") as info:
            sync.ping()
        assert "hunter2" not in str(info.value)


async def test_ping_on_the_real_redis_and_memory(redis_url: str) -> None:
    await RateLimiter(redis_url, "1/hour").aping()
    await ConcurrencyLimiter(redis_url, 1).aping()
    RateLimiter(redis_url, "1/hour").ping()
    ConcurrencyLimiter(redis_url, 1).ping()
    RateLimiter("memory://", "1/hour").ping()
    await RateLimiter("memory://", "1/hour").aping()


def lifespan_app(*limiters: Any, **options: Any) -> tuple[FastAPI, list[str]]:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def own(app: FastAPI) -> AsyncIterator[None]:
        events.append("started")
        yield
        events.append("stopped")

    app = FastAPI(lifespan=lifespan_check(*limiters, lifespan=own, **options))

    @app.get("/")
    async def root() -> str:
        return "up"

    return app, events


async def boot(app: FastAPI) -> list[dict[str, Any]]:
    """Run the ASGI lifespan protocol as a server does: startup, then shutdown."""
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    return sent


async def test_the_boot_fails_on_an_unreachable_redis(closed_url: str, redis_url: str) -> None:
    good = RateLimiter(redis_url, "1/hour", name="good")
    bad = RateLimiter(unreachable(closed_url), "1/hour", name="chat")
    app, events = lifespan_app(good, bad)
    with pytest.raises(BackendError, match="rate limiter 'chat': Redis at") as info:
        await boot(app)  # Starlette reports startup.failed and re-raises: the server exits
    assert "hunter2" not in str(info.value)
    assert events == []  # the app's own lifespan never ran


class SyncPing:
    def __init__(self) -> None:
        self.threads: list[str] = []

    def ping(self) -> None:
        self.threads.append(threading.current_thread().name)


async def test_the_boot_passes_on_the_real_redis(redis_url: str) -> None:
    app, events = lifespan_app(
        RateLimiter(redis_url, "1/hour"),
        SyncPing(),  # only a sync ping(): run in a worker thread
        ConcurrencyLimiter(redis_url, 2),
    )
    sent = await boot(app)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert events == ["started", "stopped"]


def test_lifespan_check_refuses_what_cannot_ping() -> None:
    with pytest.raises(ConfigurationError):
        lifespan_check(object())  # type: ignore[arg-type]


# -- websocket: a per-message limit ------------------------------------------------


def ws_app(limiter: RateLimiter, on_exceeded: str) -> FastAPI:
    app = FastAPI()

    @app.websocket("/ws")
    async def chat(websocket: WebSocket) -> None:
        user = websocket.headers["x-user"]
        await websocket.accept()
        async for text in websocket.iter_text():
            if not await limit_message(websocket, limiter, user, on_exceeded=on_exceeded):  # type: ignore[arg-type]
                if on_exceeded == "close":
                    return
                continue
            await websocket.send_text(f"echo {text}")

    return app


async def talk(app: FastAPI, messages: list[str], user: str = "u1") -> list[dict[str, Any]]:
    """A websocket session driven over ASGI by hand: connect, send ``messages``, then
    disconnect; what the app sent back."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await inbox.put({"type": "websocket.connect"})
    for m in messages:
        await inbox.put({"type": "websocket.receive", "text": m})
    sent: list[dict[str, Any]] = []
    done = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if inbox.empty() and len([m for m in sent if m["type"] != "websocket.accept"]) >= len(
            messages
        ):
            return {"type": "websocket.disconnect", "code": 1000}
        return await inbox.get()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "websocket.close":
            done.set()

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "path": "/ws",
        "raw_path": b"/ws",
        "query_string": b"",
        "headers": [(b"x-user", user.encode())],
        "client": ("10.0.0.1", 1234),
        "server": ("t", 80),
        "subprotocols": [],
        "scheme": "ws",
    }
    await asyncio.wait_for(app(scope, receive, send), timeout=10)
    return sent


async def test_websocket_error_frames(backend: str) -> None:
    limiter = RateLimiter(backend, "2/hour", name="ws1")
    sent = await talk(ws_app(limiter, "error"), ["a", "b", "c", "d"])
    assert sent[0]["type"] == "websocket.accept"
    frames = [m.get("text") for m in sent[1:]]
    assert frames[:2] == ["echo a", "echo b"]
    for frame in frames[2:]:
        body = json.loads(frame)
        assert body["type"] == "rate_limited" and body["policy"] == "2/hour"
        assert 1 <= body["retry_after"] <= 2 * 3600 and body["remaining"] == 0
    assert len(frames) == 4  # the connection stayed open for every message
    # another user on another connection is unaffected
    other = await talk(ws_app(limiter, "error"), ["x"], user="u2")
    assert other[1]["text"] == "echo x"


async def test_websocket_close_with_policy_violation(backend: str) -> None:
    limiter = RateLimiter(backend, "1/hour", name="ws2")
    sent = await talk(ws_app(limiter, "close"), ["a", "b", "c"])
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert sent[1]["text"] == "echo a"
    assert sent[2]["code"] == 1008
    assert sent[2]["reason"].startswith("rate limit exceeded; retry after ")


async def test_limit_message_is_checked() -> None:
    limiter = RateLimiter("memory://", "1/hour")
    with pytest.raises(ConfigurationError):
        await limit_message(object(), limiter, "k", on_exceeded="drop")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        await limit_message(object(), object(), "k")  # type: ignore[arg-type]


async def test_a_later_limit_denying_can_give_back_an_earlier_one(
    backend: str, client_of: Any
) -> None:
    from scalekit.errors import RateLimitExceeded

    minute = RateLimiter(backend, "10/hour", name="outer")
    burst = RateLimiter(backend, "1/hour", name="inner")
    app = FastAPI()
    install_handler(app)
    by_user = {"key": lambda r: r.headers["x-user"]}
    outer = Depends(limit(minute, refund_on=(RateLimitExceeded,), **by_user))  # type: ignore[arg-type]
    inner = Depends(limit(burst, **by_user))  # type: ignore[arg-type]

    @app.post("/messages", dependencies=[outer, inner])
    async def send() -> str:
        return "sent"

    client = client_of(app)
    assert [await post(client) for _ in range(4)] == [200, 429, 429, 429]
    assert (await minute.apeek("u1")).remaining == 9  # the three denied by inner: given back

"""A chat endpoint: 60 messages/hour per user, free users 20/minute, paid 100/minute.

Run it in-process (no server needed)::

    .venv/bin/python examples/chat_limits.py

or serve ``app`` with any ASGI server (``uvicorn examples.chat_limits:app``) and send
``POST /messages`` with the headers ``x-user`` and ``x-tier``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeAlias

from scalekit import RateLimiter
from scalekit.ratelimit import RateLimitMiddleware

per_tier = RateLimiter(
    "memory://",  # "redis://localhost:6379/0" when the service runs on many machines
    {"free": "20/minute; 60/hour", "paid": "100/minute; 60/hour"},
    name="chat",
)

# the ASGI shapes (what any ASGI server passes an app)
Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]


def header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", []):
        if k == name:
            return str(v.decode())
    return None


async def chat(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 201, "headers": []})
    await send({"type": "http.response.body", "body": b"sent\n"})


app = RateLimitMiddleware(
    chat,
    per_tier,
    key=lambda scope: header(scope, b"x-user"),  # no user header: the client address
    tier=lambda scope: header(scope, b"x-tier") or "free",
)


async def request(user: str, tier: str) -> tuple[int, dict[str, str]]:
    """Drive ``app`` in-process, as a server would."""
    scope: Scope = {
        "type": "http",
        "method": "POST",
        "path": "/messages",
        "headers": [(b"x-user", user.encode()), (b"x-tier", tier.encode())],
        "client": ("127.0.0.1", 50000),
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"hi", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}


async def main() -> None:
    for user, tier in (("alice", "free"), ("bob", "paid")):
        statuses = [(await request(user, tier))[0] for _ in range(25)]
        print(f"{user} ({tier}): {statuses.count(201)} sent, {statuses.count(429)} refused")
    status, headers = await request("alice", "free")
    print(f"alice again: {status}, Retry-After={headers.get('retry-after')}")
    print(f"  RateLimit-Policy: {headers.get('ratelimit-policy')}")
    print(f"  RateLimit: {headers.get('ratelimit')}")


if __name__ == "__main__":
    asyncio.run(main())

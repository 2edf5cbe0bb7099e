"""The sync service: ``GET /sync`` hands a mobile client what changed since its last sync.

With the primitives (``ServiceConfig(primitives=True)``, the default):

- two :class:`scalekit.sync.ChangeFeed` s (conversations, messages) filtered on the
  user, so a sync returns the user's rows written since the client's cursor and the
  ids deleted since then (tombstones), never missing a row of a transaction that
  committed late;
- a per-tier :class:`scalekit.ratelimit.RateLimiter` (GCRA): free clients start
  a sync at most every 60 s, paid ones every 30 s; a client that asks earlier gets a
  429 with ``Retry-After`` (``scalekit.fastapi.install_exception_handlers``). Further
  pages of a sync already started are not a new sync; a per-user page limit bounds
  them instead;
- a cursor that can no longer be continued (:class:`scalekit.errors.MustRefetch`:
  tombstones purged, another database) is answered with a full resync in the same
  response: ``reset: true`` (drop the local copy first), ``refetch`` naming why, the
  first page of everything and a fresh cursor.

With ``primitives=False`` every sync is a full refetch of the user's conversations
and messages (``reset: true``, no cursor, no limit): the baseline the demo measures.

The response, in both modes::

    {"reset": false,          # true: drop the local copy, then apply this page
     "refetch": null,         # why the server restarted the sync ("purged", ...)
     "conversations": {"upserts": [row, ...], "deletes": [id, ...]},
     "messages":      {"upserts": [row, ...], "deletes": [id, ...]},
     "cursor": "...",         # send it back as ?cursor= (null in full-refetch mode)
     "more": false}           # true: call again now with cursor, the sync goes on

The write endpoints (create a conversation, add, edit and delete messages, delete a
conversation) are the client-facing write path the workload uses to change the data
between syncs. Users authenticate upstream: ``X-User-Id`` and ``X-User-Tier`` stand
for the claims of a verified token.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Header, HTTPException, Query, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from scalekit.backends import Backend, RedisBackend, backend_from_url
from scalekit.errors import MustRefetch, RateLimitExceeded
from scalekit.fastapi import install_exception_handlers
from scalekit.observability import (
    PostgresProbe,
    Probe,
    RedisProbe,
    RegistryProbe,
    health_app,
    metrics_app,
)
from scalekit.pools import PgPool, PoolSettings
from scalekit.ratelimit import RateLimiter
from scalekit.sync import ChangeFeed, ChangePage, install_change_tracking

from ..common import ServiceConfig
from .token import MAX_TOKEN_CHARS, SyncToken, TokenCodec

SCHEMA = Path(__file__).with_name("schema.sql")

#: the synced tables, in the order of the token's cursors
TABLES = ("conversations", "messages")
#: what a full refetch returns per table (the rows' own columns)
COLUMNS = {
    "conversations": "id, user_id, title, message_count, created_at, updated_at",
    "messages": "id, conversation_id, user_id, role, body, created_at",
}
#: one sync per interval, per tier
SYNC_INTERVALS = {"free": "1/60s", "paid": "1/30s"}
#: further pages of a sync under way, per user
PAGE_RATE = "120/minute"
#: rows per table and page unless the client asks for fewer
PAGE_SIZE = 500

UserId = Annotated[int, Header(gt=0, lt=2**63, description="the authenticated user")]
RowId = Annotated[int, PathParam(gt=0, lt=2**63)]
Tier = Annotated[Literal["free", "paid"], Header(description="the user's plan")]


async def install(conn: Any) -> None:
    """Change tracking on conversations and messages (tombstones keep ``user_id``, the
    column each user's feed filters on) and the per-user feed indexes; idempotent."""
    for table in TABLES:
        await install_change_tracking(conn, table, key="id", keep=["user_id"])
    await conn.execute(SCHEMA.read_text())


async def seed(conn: Any, *, users: int, seed: int) -> None:
    """Nothing to add: the service syncs the shared tables chat_service's seed fills."""


class _Service:
    """What the endpoints use, opened by the app's lifespan."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        # pool options in the URL (?pooler=pgbouncer-transaction, ...) are taken out
        self.settings = PoolSettings.from_url(config.database_url, max_size=config.pool_size)
        self.pool = PgPool(self.settings)
        self.backend: Backend | None = None
        self.feeds: tuple[ChangeFeed, ...] = ()
        self.codec = TokenCodec(config.cursor_secret)

    async def open(self) -> None:
        config = self.config
        await self.pool.open()
        if not config.primitives:
            return
        if config.redis_url is not None and config.clock is not None:
            # simulated time (tests, the demo) drives Redis' scripts too; in
            # production the limiters use the Redis server's TIME
            self.backend = backend_from_url(config.redis_url, clock=config.clock)
        else:
            self.backend = backend_from_url(config.backend_url)
        self.interval = RateLimiter(
            self.backend, SYNC_INTERVALS, algorithm="gcra", name="sync", clock=config.clock
        )
        self.pages = RateLimiter(
            self.backend, PAGE_RATE, algorithm="gcra", name="sync-pages", clock=config.clock
        )
        secret = config.cursor_secret
        self.feeds = tuple(ChangeFeed(table, key="id", secret=secret) for table in TABLES)

    async def close(self) -> None:
        await self.pool.close()
        if isinstance(self.backend, RedisBackend):
            await self.backend.aclose()

    async def delta(self, user: int, tier: str, cursor: str | None, limit: int) -> dict[str, Any]:
        token = None if cursor is None else self.codec.decode(cursor, user_id=user)
        key = str(user)
        if token is not None and token.continues:
            decision = await self.pages.ahit(key)
        else:
            decision = await self.interval.ahit(key, tier=tier)
        if not decision.allowed:
            raise RateLimitExceeded(decision, key)
        refetch = None
        try:
            pages = await self._read(token, user, limit)
        except MustRefetch as exc:  # answered with a full resync, not an error
            refetch = exc.reason
            token = None
            pages = await self._read(None, user, limit)
        cursors: list[str] = []
        for i, page in enumerate(pages):
            if page is not None:
                cursors.append(page.cursor)
            else:  # skipped while the other feed's pass goes on: keeps its cursor
                assert token is not None
                cursors.append(token.cursors[i])
        more = [page is not None and not page.up_to_date for page in pages]
        body: dict[str, Any] = {"reset": any(p is not None and p.reset for p in pages)}
        body["refetch"] = refetch
        for table, page in zip(TABLES, pages, strict=True):
            body[table] = {
                "upserts": [] if page is None else page.upserts,
                "deletes": [] if page is None else page.deletes,
            }
        token = SyncToken((cursors[0], cursors[1]), (more[0], more[1]))
        body["cursor"] = self.codec.encode(token, user_id=user)
        body["more"] = token.continues
        return body

    async def _read(
        self, token: SyncToken | None, user: int, limit: int
    ) -> list[ChangePage | None]:
        """One page per feed, both read at once (one connection each); a feed whose
        pass ended while the other's goes on is skipped (``None``) meanwhile."""

        async def page(i: int, feed: ChangeFeed) -> ChangePage | None:
            if token is not None and token.continues and not token.more[i]:
                return None
            cursor = None if token is None else token.cursors[i]
            return await feed.changes(
                self.pool, cursor, limit=limit, where="user_id = $1", params=[user]
            )

        # both run to the end (no read left behind), then the first error is raised
        results = await asyncio.gather(
            *(page(i, feed) for i, feed in enumerate(self.feeds)), return_exceptions=True
        )
        pages: list[ChangePage | None] = []
        for result in results:
            if isinstance(result, BaseException):
                raise result
            pages.append(result)
        return pages

    async def full_refetch(self, user: int) -> dict[str, Any]:
        body: dict[str, Any] = {"reset": True, "refetch": None}
        async with (
            self.pool.acquire() as con,
            con.transaction(isolation="repeatable_read", readonly=True),
        ):
            for table in TABLES:
                rows = await con.fetch(
                    f"SELECT {COLUMNS[table]} FROM {table} WHERE user_id = $1 ORDER BY id", user
                )
                body[table] = {"upserts": [dict(r) for r in rows], "deletes": []}
        body["cursor"] = None
        body["more"] = False
        return body


class NewConversation(BaseModel):
    title: str = Field(default="", max_length=200)


class NewMessage(BaseModel):
    role: Literal["user", "assistant"] = "user"
    body: str = Field(min_length=1, max_length=10_000)


class MessageEdit(BaseModel):
    body: str = Field(min_length=1, max_length=10_000)


def _found(value: object, what: str) -> None:
    if value is None:
        raise HTTPException(404, f"no such {what}")


def create_app(config: ServiceConfig) -> FastAPI:
    """The sync service's FastAPI app (see the module docstring)."""
    svc = _Service(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await svc.open()
        try:
            yield
        finally:
            await svc.close()

    app = FastAPI(title="sync_service", lifespan=lifespan)
    install_exception_handlers(app)  # 429 + Retry-After, 400 for a bad cursor, ...
    probes: list[Probe] = [PostgresProbe(svc.settings.url), RegistryProbe()]
    if config.redis_url is not None and config.primitives:
        probes.append(RedisProbe(config.redis_url))
    app.mount("/health", health_app(*probes))
    app.mount("/metrics", metrics_app())

    @app.get("/sync")
    async def sync(
        x_user_id: UserId,
        x_user_tier: Tier = "free",
        cursor: Annotated[str | None, Query(max_length=MAX_TOKEN_CHARS)] = None,
        limit: Annotated[int, Query(ge=1, le=PAGE_SIZE)] = PAGE_SIZE,
    ) -> dict[str, Any]:
        if not config.primitives:
            return await svc.full_refetch(x_user_id)
        return await svc.delta(x_user_id, x_user_tier, cursor, limit)

    @app.post("/conversations", status_code=201)
    async def create_conversation(x_user_id: UserId, new: NewConversation) -> dict[str, int]:
        cid = await svc.pool.fetchval(
            "INSERT INTO conversations (user_id, title) SELECT id, $2 FROM users WHERE id = $1 "
            "RETURNING id",
            x_user_id,
            new.title,
        )
        _found(cid, "user")
        return {"id": cid}

    @app.post("/conversations/{cid}/messages", status_code=201)
    async def add_message(x_user_id: UserId, cid: RowId, new: NewMessage) -> dict[str, int]:
        mid = await svc.pool.fetchval(
            "WITH c AS (UPDATE conversations SET message_count = message_count + 1, "
            "  updated_at = now() WHERE id = $1 AND user_id = $2 RETURNING id, user_id) "
            "INSERT INTO messages (conversation_id, user_id, role, body) "
            "SELECT id, user_id, $3, $4 FROM c RETURNING id",
            cid,
            x_user_id,
            new.role,
            new.body,
        )
        _found(mid, "conversation")
        return {"id": mid}

    @app.patch("/messages/{mid}", status_code=204)
    async def edit_message(x_user_id: UserId, mid: RowId, edit: MessageEdit) -> Response:
        done = await svc.pool.fetchval(
            "UPDATE messages SET body = $3 WHERE id = $1 AND user_id = $2 RETURNING id",
            mid,
            x_user_id,
            edit.body,
        )
        _found(done, "message")
        return Response(status_code=204)

    @app.delete("/messages/{mid}", status_code=204)
    async def delete_message(x_user_id: UserId, mid: RowId) -> Response:
        done = await svc.pool.fetchval(
            "WITH m AS (DELETE FROM messages WHERE id = $1 AND user_id = $2 "
            "  RETURNING conversation_id) "
            "UPDATE conversations SET message_count = message_count - 1, updated_at = now() "
            "WHERE id = (SELECT conversation_id FROM m) RETURNING id",
            mid,
            x_user_id,
        )
        _found(done, "message")
        return Response(status_code=204)

    @app.delete("/conversations/{cid}", status_code=204)
    async def delete_conversation(x_user_id: UserId, cid: RowId) -> Response:
        done = await svc.pool.fetchval(
            "DELETE FROM conversations WHERE id = $1 AND user_id = $2 RETURNING id",
            cid,
            x_user_id,
        )
        _found(done, "conversation")
        return Response(status_code=204)

    return app

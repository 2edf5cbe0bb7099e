"""The feed service: a FastAPI app over posts, authors, trending videos and views.

With ``config.primitives`` (the default):

- ``GET /feed`` and ``GET /users/{id}/posts`` page with
  :class:`scalekit.pagination.Keyset` (signed cursors, one index range scan per page
  at any depth, pages complete and disjoint while posts are written);
- each page's authors load through one :class:`scalekit.batching.DataLoader`
  (one ``WHERE id = ANY($1)`` query per page, not one per post);
- ``GET /trending`` reads a list that a :class:`scalekit.cache.RefreshAhead` job
  recomputes every 5 minutes into the cache (on Redis, one process of the fleet
  computes each period: the others find it fresh or leased);
- cacheable answers carry ``ETag`` and ``Cache-Control`` and revalidate to 304.

With ``primitives=False`` the same endpoints page with ``LIMIT/OFFSET`` (the
cursor is the offset), load each post's author with its own query (N+1), compute
trending on every request and send no validators.

In both, ``video_views`` is kept by :data:`~examples.feed_service._db.VIEW_PARTITIONS`
(a :class:`scalekit.maintenance.Partitions` job under a
:class:`scalekit.maintenance.Runner`'s advisory lock): hourly from the lifespan
and on ``POST /admin/maintenance``. That is housekeeping the table needs to accept
views at all, not a saving the demo measures, so it does not depend on the switch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, Field

from scalekit.batching import BatchScopeMiddleware, DataLoader, row_loader
from scalekit.cache import Cache, RefreshAhead
from scalekit.fastapi import install_exception_handlers
from scalekit.maintenance import PartitionReport, Runner
from scalekit.observability import PostgresProbe, Probe, RedisProbe, health_app, metrics_app
from scalekit.pagination import Keyset
from scalekit.pools import PgPool, PoolSettings

from ..common import ServiceConfig
from ._db import VIEW_PARTITIONS
from ._http import cacheable

#: the trending list: recomputed every 5 minutes (ttl - refresh_ahead), kept 6
TRENDING_KEY = "feed:trending"
TRENDING_TTL = 360.0
TRENDING_AHEAD = 60.0
TRENDING_SIZE = 20
#: how often the lifespan runs the partition job
MAINTENANCE_EVERY = 3600.0
PAGE_LIMIT = 20
MAX_PAGE_LIMIT = 100

_POST_COLUMNS = "id, author_id, kind, body, created_at"
FEED_SQL = f"SELECT {_POST_COLUMNS} FROM posts"
AUTHOR_POSTS_SQL = f"SELECT {_POST_COLUMNS} FROM posts WHERE author_id = $1"
_ORDER = [("created_at", "desc"), ("id", "desc")]
_AUTHORS_SQL = "SELECT id, name, tier FROM users WHERE id = ANY($1::bigint[])"
_AUTHOR_SQL = "SELECT id, name, tier FROM users WHERE id = $1"
# the videos most viewed in the last 7 days (video_views_recent serves the range)
_TRENDING_SQL = f"""
SELECT {", ".join("p." + c.strip() for c in _POST_COLUMNS.split(","))}, t.views
FROM (
    SELECT post_id, count(*) AS views FROM video_views
    WHERE viewed_at >= now() - interval '7 days'
    GROUP BY post_id ORDER BY views DESC, post_id LIMIT $1
) AS t
JOIN posts AS p ON p.id = t.post_id
ORDER BY t.views DESC, p.id
"""


#: a bigint id in a path: anything else is a 422, never a driver error
Id = Annotated[int, Path(ge=1, le=2**63 - 1)]


class NewPost(BaseModel):
    author_id: int = Field(ge=1, le=2**63 - 1)
    body: str = Field(min_length=1, max_length=5000, pattern=r"^[^\x00]*$")  # no NUL in text
    kind: Literal["text", "video"] = "text"


class NewView(BaseModel):
    user_id: int = Field(ge=1, le=2**63 - 1)


@dataclass(eq=False)
class FeedService:
    """What the handlers share; its resources open in the app's lifespan."""

    config: ServiceConfig
    background: bool
    pool: PgPool = field(init=False)
    authors: DataLoader[int, Any] = field(init=False)
    cache: Cache = field(init=False)
    trending_job: RefreshAhead = field(init=False)
    maintenance: Runner = field(init=False)
    feed_pages: Keyset = field(init=False)
    author_pages: Keyset = field(init=False)
    last_report: PartitionReport | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def on(self) -> bool:
        return self.config.primitives

    # -- lifespan ------------------------------------------------------------------
    async def open(self) -> None:
        cfg = self.config
        settings = PoolSettings.from_url(cfg.database_url, max_size=cfg.pool_size)
        self.pool = await PgPool(settings, clock=cfg.clock).open()
        try:
            self.authors = row_loader(self.pool, _AUTHORS_SQL, key="id", name="feed.authors")
            self.feed_pages, self.author_pages = (
                Keyset(
                    sql,
                    _ORDER,
                    not_null=["created_at"],
                    secret=cfg.cursor_secret,
                    max_limit=MAX_PAGE_LIMIT,
                    default_limit=PAGE_LIMIT,
                )
                for sql in (FEED_SQL, AUTHOR_POSTS_SQL)
            )
            self.cache = Cache(cfg.backend_url, name="feed", clock=cfg.clock)
            self.trending_job = RefreshAhead(
                self.cache,
                TRENDING_KEY,
                self.compute_trending,
                ttl=TRENDING_TTL,
                refresh_ahead=TRENDING_AHEAD,
                name="feed.trending",
            )
            self.maintenance = Runner(
                self._maintain,
                MAINTENANCE_EVERY,
                pool=self.pool,
                name=VIEW_PARTITIONS.job_name,
                clock=cfg.clock,
            )
            if self.background:
                self.maintenance.start()
                if self.on:
                    self._tasks.append(asyncio.create_task(self.trending_job.run()))
        except BaseException:
            await self.pool.close()  # nothing else holds a resource yet
            raise

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.maintenance.stop()
        await self.cache.adrain()
        await self.pool.close()

    async def _maintain(self, pool: Any) -> PartitionReport:
        self.last_report = await VIEW_PARTITIONS.run(pool)
        return self.last_report

    # -- reads ---------------------------------------------------------------------
    async def page(
        self, keyset: Keyset, sql: str, params: Sequence[object], cursor: str | None, limit: int
    ) -> tuple[list[Any], str | None]:
        """One page of ``sql`` and the cursor of the next (``None`` at the end)."""
        if self.on:
            page = await keyset.page(self.pool, *params, after=cursor, limit=limit)
            return page.items, page.next_cursor
        # the naive way: the cursor is an offset, and the server reads and throws
        # away every row before it
        offset = _offset(cursor)
        n = len(params)
        rows = await self.pool.fetch(
            f"{sql} ORDER BY created_at DESC, id DESC LIMIT ${n + 1} OFFSET ${n + 2}",
            *params,
            limit + 1,
            offset,
        )
        more = len(rows) > limit
        return list(rows[:limit]), str(offset + limit) if more else None

    async def load_authors(self, ids: list[int]) -> list[Any]:
        """The author row of each id (``None`` for an unknown one), in order."""
        if self.on:
            return await self.authors.load_many(ids)  # one query for all of them
        return [await self.pool.fetchrow(_AUTHOR_SQL, i) for i in ids]  # one query each

    async def render(self, rows: Sequence[Any]) -> list[dict[str, Any]]:
        authors = await self.load_authors([r["author_id"] for r in rows])
        return [_post(r, a) for r, a in zip(rows, authors, strict=True)]

    async def compute_trending(self) -> dict[str, Any]:
        rows = await self.pool.fetch(_TRENDING_SQL, TRENDING_SIZE)
        items = await self.render(rows)
        for item, row in zip(items, rows, strict=True):
            item["views"] = int(row["views"])
        return {"items": items}

    async def trending(self) -> Any:
        if not self.on:
            return await self.compute_trending()
        value = await self.cache.aget(TRENDING_KEY)
        if value is None:  # before the job's first run (or the cache lost it): load once
            value = await self.cache.aget_or_load(
                TRENDING_KEY, self.compute_trending, options=self.trending_job.options
            )
        return value


def _offset(cursor: str | None) -> int:
    if cursor is None or cursor == "":
        return 0
    if not cursor.isascii() or not cursor.isdigit() or len(cursor) > 12:
        raise HTTPException(400, "invalid cursor")
    return int(cursor)


def _post(row: Any, author: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "kind": row["kind"],
        "body": row["body"],
        "created_at": row["created_at"].isoformat(),
        "author": None
        if author is None
        else {"id": author["id"], "name": author["name"], "tier": author["tier"]},
    }


def create_app(config: ServiceConfig, *, background: bool | None = None) -> FastAPI:
    """The feed service for ``config`` (see the module docstring).

    ``background``: run the trending refresher and the hourly partition job as
    tasks of the lifespan. Default: only with a real clock; with an injected clock
    (a FakeClock's sleeps return at once) tests drive ``app.state.feed.trending_job``
    and ``POST /admin/maintenance`` themselves.
    """
    svc = FeedService(config, background=config.clock is None if background is None else background)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await svc.open()
        try:
            yield
        finally:
            await svc.close()

    app = FastAPI(title="feed_service", lifespan=lifespan)
    app.state.feed = svc
    install_exception_handlers(app)
    if config.primitives:
        app.add_middleware(BatchScopeMiddleware)  # one loader cache per request
    probes: list[Probe] = [PostgresProbe(config.database_url)]
    if config.redis_url:
        probes.append(RedisProbe(config.redis_url))
    app.mount("/health", health_app(*probes))
    app.mount("/metrics", metrics_app())
    on = config.primitives

    @app.get("/feed")
    async def feed(
        request: Request,
        cursor: str | None = None,
        limit: int = Query(PAGE_LIMIT, ge=1, le=MAX_PAGE_LIMIT),
    ) -> Response:
        rows, nxt = await svc.page(svc.feed_pages, FEED_SQL, (), cursor, limit)
        items = await svc.render(rows)
        payload = {"items": items, "next": nxt}
        return cacheable(request, payload, max_age=10, public=True, validators=on, same_as=items)

    @app.get("/users/{user_id}/posts")
    async def user_posts(
        request: Request,
        user_id: Id,
        cursor: str | None = None,
        limit: int = Query(PAGE_LIMIT, ge=1, le=MAX_PAGE_LIMIT),
    ) -> Response:
        rows, nxt = await svc.page(svc.author_pages, AUTHOR_POSTS_SQL, (user_id,), cursor, limit)
        items = await svc.render(rows)
        payload = {"items": items, "next": nxt}
        return cacheable(request, payload, max_age=10, public=True, validators=on, same_as=items)

    @app.get("/posts/{post_id}")
    async def post(request: Request, post_id: Id) -> Response:
        row = await svc.pool.fetchrow(f"SELECT {_POST_COLUMNS} FROM posts WHERE id = $1", post_id)
        if row is None:
            raise HTTPException(404, "no such post")
        payload = (await svc.render([row]))[0]
        return cacheable(request, payload, max_age=60, public=True, validators=on)

    @app.get("/trending")
    async def trending(request: Request) -> Response:
        payload = await svc.trending()
        return cacheable(request, payload, max_age=60, public=True, validators=on)

    @app.post("/posts", status_code=201)
    async def create_post(new: NewPost) -> dict[str, Any]:
        try:
            row = await svc.pool.fetchrow(
                f"INSERT INTO posts (author_id, kind, body) VALUES ($1, $2, $3) "
                f"RETURNING {_POST_COLUMNS}",
                new.author_id,
                new.kind,
                new.body,
            )
        except Exception as exc:
            if getattr(exc, "sqlstate", None) == "23503":  # foreign key: no such user
                raise HTTPException(422, "no such author") from None
            raise
        return (await svc.render([row]))[0]

    @app.post("/posts/{post_id}/views", status_code=204)
    async def record_view(post_id: Id, view: NewView) -> Response:
        status = await svc.pool.execute(
            "INSERT INTO video_views (post_id, user_id) SELECT id, $2 FROM posts "
            "WHERE id = $1 AND kind = 'video'",
            post_id,
            view.user_id,
        )
        if status.endswith(" 0"):
            raise HTTPException(404, "no such video")
        return Response(status_code=204)

    @app.post("/admin/maintenance")
    async def maintenance() -> dict[str, Any]:
        """Run the partition job now (skipped if another worker holds its lock)."""
        svc.last_report = None
        ran = await svc.maintenance.run_once()
        report = svc.last_report
        return {
            "ran": ran,
            "created": list(report.created) if report else [],
            "detached": list(report.detached) if report else [],
            "rolled_up": list(report.rolled_up) if report else [],
            "dropped": list(report.dropped) if report else [],
            "problems": list(report.problems) if report else [],
        }

    return app

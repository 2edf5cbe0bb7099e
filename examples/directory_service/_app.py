"""The directory service: search a school's members, filtered, page by page.

``GET /schools/{id}/members?role=&grade=&prefix=&cursor=&limit=`` answers one page
of the school's members in (name, id) order and the cursor of the next page.

With ``config.primitives`` (the default) a page is a
:class:`scalekit.pagination.Keyset` page: the cursor is signed and bound to the
school and the filters, and the query is ``WHERE (name, id) > ($n, $m) ... LIMIT``,
one range scan of an index in that order that reads the page's rows and stops,
however deep the page is. With ``primitives=False`` the cursor is an offset and the
query ``LIMIT/OFFSET``: PostgreSQL reads every row before the page and throws it
away, so page 500 costs 500 pages.

``GET /schools/{id}/members/explain`` (same parameters) runs the exact statement of
that page under ``EXPLAIN (ANALYZE, BUFFERS)`` and answers the rows the server read
and the buffers it touched: what the demo reports as "keyset vs OFFSET at depth".
A debugging endpoint: keep such a thing off a public API.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Path, Query

from scalekit.fastapi import install_exception_handlers
from scalekit.observability import PostgresProbe, health_app, metrics_app
from scalekit.pagination import Keyset
from scalekit.pools import PgPool, PoolSettings

from ..common import ServiceConfig

PAGE_LIMIT = 50
MAX_PAGE_LIMIT = 1000
MAX_PREFIX = 100
_COLUMNS = "id, name, role, grade, email"
_ORDER = [("name", "asc"), ("id", "asc")]

Role = Literal["student", "teacher", "staff", "parent"]
SchoolId = Annotated[int, Path(ge=1, le=2**63 - 1)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_LIMIT)]
Grade = Annotated[int | None, Query(ge=1, le=12)]
Prefix = Annotated[str | None, Query(max_length=MAX_PREFIX)]


@dataclass(frozen=True, slots=True)
class Search:
    """A school and the filters of one search, as SQL and its parameters."""

    school_id: int
    role: str | None = None
    grade: int | None = None
    prefix: str | None = None

    def sql(self) -> tuple[str, list[object]]:
        where = ["school_id = $1"]
        params: list[object] = [self.school_id]

        def add(condition: str, value: object) -> None:
            params.append(value)
            where.append(condition.format(f"${len(params)}"))

        if self.role is not None:
            add("role = {}", self.role)
        if self.grade is not None:
            add("grade = {}", self.grade)
        if self.prefix:
            # a range on the "C"-collated name: the index serves it (LIKE 'x%' with
            # a parameter could not be planned as a range)
            add("name >= {}", self.prefix)
            end = prefix_end(self.prefix)
            if end is not None:
                add("name < {}", end)
        return f"SELECT {_COLUMNS} FROM members WHERE " + " AND ".join(where), params


def prefix_end(prefix: str) -> str | None:
    """The smallest string after every string starting with ``prefix`` in code-point
    (= UTF-8 byte, = "C" collation) order; ``None`` if there is none."""
    chars = list(prefix)
    while chars:
        code = ord(chars.pop()) + 1
        if code == 0xD800:  # surrogates are not characters: skip them
            code = 0xE000
        if code <= 0x10FFFF:
            return "".join(chars) + chr(code)
    return None


class _Explain:
    """A fetcher that runs the statement it is given under EXPLAIN (ANALYZE,
    BUFFERS) instead, keeps the plan and answers no rows."""

    def __init__(self, pool: PgPool) -> None:
        self.pool = pool
        self.plan: dict[str, Any] = {}

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        raw = await self.pool.fetchval(
            "EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, FORMAT JSON) " + query, *args
        )
        self.plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]
        return []


_SCANS = {"Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Heap Scan"}


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from _nodes(child)


def plan_figures(plan: dict[str, Any]) -> dict[str, float]:
    """What a plan read: ``rows_read`` (rows the table scans produced or filtered
    out, times their loops), ``shared_buffers`` (hit + read) and the server's
    ``execution_ms``."""
    top = plan["Plan"]
    rows = 0.0
    for node in _nodes(top):
        if node.get("Node Type") in _SCANS:
            produced = node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)
            produced += node.get("Rows Removed by Index Recheck", 0)
            rows += produced * node.get("Actual Loops", 1)
    return {
        "rows_read": rows,
        "shared_buffers": float(top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0)),
        "execution_ms": float(plan.get("Execution Time", 0.0)),
    }


@dataclass(eq=False)
class DirectoryService:
    config: ServiceConfig
    pool: PgPool = field(init=False)
    _keysets: dict[str, Keyset] = field(default_factory=dict)

    async def open(self) -> None:
        cfg = self.config
        settings = PoolSettings.from_url(cfg.database_url, max_size=cfg.pool_size)
        self.pool = await PgPool(settings, clock=cfg.clock).open()

    async def close(self) -> None:
        await self.pool.close()

    def keyset(self, sql: str) -> Keyset:
        # one Keyset per filter combination (at most 2**3 statement shapes)
        found = self._keysets.get(sql)
        if found is None:
            found = self._keysets[sql] = Keyset(
                sql,
                _ORDER,
                not_null=["name"],
                secret=self.config.cursor_secret,
                max_limit=MAX_PAGE_LIMIT,
                default_limit=PAGE_LIMIT,
            )
        return found

    async def page(
        self, db: Any, search: Search, cursor: str | None, limit: int
    ) -> tuple[list[Any], str | None]:
        sql, params = search.sql()
        if self.config.primitives:
            page = await self.keyset(sql).page(db, *params, after=cursor, limit=limit)
            return page.items, page.next_cursor
        offset = _offset(cursor)
        n = len(params)
        rows = await db.fetch(
            f"{sql} ORDER BY name, id LIMIT ${n + 1} OFFSET ${n + 2}", *params, limit + 1, offset
        )
        more = len(rows) > limit
        return list(rows[:limit]), str(offset + limit) if more else None


def _offset(cursor: str | None) -> int:
    if cursor is None or cursor == "":
        return 0
    if not cursor.isascii() or not cursor.isdigit() or len(cursor) > 12:
        raise HTTPException(400, "invalid cursor")
    return int(cursor)


@dataclass(frozen=True, slots=True)
class PageQuery:
    """One page request: the search, where it continues and how many rows."""

    search: Search
    cursor: str | None
    limit: int


def page_query(
    school_id: SchoolId,
    role: Role | None = None,
    grade: Grade = None,
    prefix: Prefix = None,
    cursor: str | None = None,
    limit: Limit = PAGE_LIMIT,
) -> PageQuery:
    """The query string of a members page (a FastAPI dependency)."""
    if prefix is not None and "\x00" in prefix:
        raise HTTPException(422, "prefix must not contain NUL")
    return PageQuery(Search(school_id, role, grade, prefix or None), cursor, limit)


def _member(row: Any) -> dict[str, Any]:
    return {k: row[k] for k in ("id", "name", "role", "grade", "email")}


def create_app(config: ServiceConfig) -> FastAPI:
    """The directory service for ``config`` (see the module docstring)."""
    svc = DirectoryService(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await svc.open()
        try:
            yield
        finally:
            await svc.close()

    app = FastAPI(title="directory_service", lifespan=lifespan)
    app.state.directory = svc
    install_exception_handlers(app)
    app.mount("/health", health_app(PostgresProbe(config.database_url)))
    app.mount("/metrics", metrics_app())

    @app.get("/schools")
    async def schools() -> list[dict[str, Any]]:
        rows = await svc.pool.fetch("SELECT id, name FROM schools ORDER BY id")
        return [{"id": r["id"], "name": r["name"]} for r in rows]

    @app.get("/schools/{school_id}/members")
    async def members(query: Annotated[PageQuery, Depends(page_query)]) -> dict[str, Any]:
        rows, nxt = await svc.page(svc.pool, query.search, query.cursor, query.limit)
        return {"items": [_member(r) for r in rows], "next": nxt}

    @app.get("/schools/{school_id}/members/explain")
    async def explain(query: Annotated[PageQuery, Depends(page_query)]) -> dict[str, Any]:
        """The page's statement under EXPLAIN (ANALYZE, BUFFERS): what it read."""
        explainer = _Explain(svc.pool)
        await svc.page(explainer, query.search, query.cursor, query.limit)
        return {
            "mode": "keyset" if config.primitives else "offset",
            **plan_figures(explainer.plan),
        }

    return app

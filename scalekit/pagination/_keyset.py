"""Keyset (seek) pagination with signed cursors, and bounded offset pagination."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from scalekit import _validate
from scalekit._clock import Clock
from scalekit.errors import ConfigurationError, CursorError
from scalekit.pagination._cursor import CursorCodec, digest
from scalekit.pagination._sql import (
    ALIAS,
    Fetcher,
    Params,
    SortColumn,
    keyset_predicate,
    order_sql,
    parse_order_by,
    query_errors,
)

__all__ = ["Keyset", "Offset", "OffsetPage", "Page"]


def _check_query(query: object) -> str:
    if not isinstance(query, str) or not query.strip():
        raise ConfigurationError(f"query must be a non-empty SQL str, got {query!r}")
    return query.strip().rstrip(";")


@dataclass(frozen=True, slots=True)
class Page:
    """One keyset page: ``items`` in the query's order, and the cursors around them.

    ``next_cursor`` (when ``has_next``) continues after the last item with
    ``after=``; ``prev_cursor`` (when ``has_prev``) goes back before the first item
    with ``before=``. ``has_prev`` on a forward page means "a cursor was given", and
    ``has_next`` on a backward page the same: the row the cursor came from exists.
    """

    items: list[Any]
    next_cursor: str | None
    prev_cursor: str | None
    has_next: bool
    has_prev: bool


@dataclass(frozen=True, slots=True)
class OffsetPage:
    """One offset page: ``items``, where it starts and whether more rows follow."""

    items: list[Any]
    offset: int
    limit: int
    has_next: bool
    has_prev: bool


class Keyset:
    """Keyset pages of ``query`` in the order of ``order_by``.

    ``query`` is one SELECT with ``$1..$n`` parameters (given to :meth:`page`); the
    page wraps it as ``SELECT * FROM (query) WHERE <after the cursor> ORDER BY ...
    LIMIT limit + 1``, which PostgreSQL flattens into the query itself. Every sort
    column must be in the select list. ``key`` (default ``"id"``) is a unique, non-NULL
    column appended as the last sort column when absent. Sort columns other than
    ``key`` may hold NULLs unless listed in ``not_null``; declaring them lets the
    predicate be a single row comparison in more cases (see the reference).

    Cursors are signed with ``secret`` (or ``SCALEKIT_CURSOR_SECRET``), bound to the
    query, the sort, the parameters and ``tenant``, and refused after ``max_age``
    when one is set.
    """

    __slots__ = ("_codec", "_columns", "_query", "_shape", "default_limit", "max_limit")

    def __init__(
        self,
        query: str,
        order_by: Sequence[tuple[str, str] | str],
        *,
        key: str = "id",
        not_null: Iterable[str] = (),
        secret: str | bytes | None = None,
        max_limit: int = 1000,
        default_limit: int = 50,
        max_age: float | timedelta | None = None,
        clock: Clock | Callable[[], float] | None = None,
    ) -> None:
        self._query = _check_query(query)
        self._columns = parse_order_by(order_by, key=key, not_null=not_null)
        self.max_limit = _validate.count(max_limit, "max_limit")
        self.default_limit = _validate.count(default_limit, "default_limit", maximum=max_limit)
        self._codec = CursorCodec(
            secret, purpose="keyset", what="Keyset", max_age=max_age, clock=clock
        )
        # the query and sort, digested once; each page adds its parameters and tenant
        self._shape = digest("keyset", self._query, tuple(c.spec() for c in self._columns))

    def __repr__(self) -> str:
        order = ", ".join(f"{c.name} {'desc' if c.desc else 'asc'}" for c in self._columns)
        return f"Keyset(order_by=[{order}], max_limit={self.max_limit})"

    def _binding(self, params: Sequence[object], tenant: str | None) -> bytes:
        return digest(self._shape, list(params), tenant)

    def _sql(
        self, columns: Sequence[SortColumn], values: Sequence[object] | None, n_params: int
    ) -> tuple[str, list[object]]:
        params = Params(n_params)
        where = "" if values is None else f" WHERE {keyset_predicate(columns, values, params)}"
        limit = params.add(None)  # placeholder, filled by the caller
        sql = (
            f"SELECT * FROM ({self._query}) AS {ALIAS}{where} "
            f"ORDER BY {order_sql(columns)} LIMIT {limit}"
        )
        return sql, params.values

    def sql(self, *, after: bool = False, backward: bool = False, n_params: int = 0) -> str:
        """The SQL a page runs (for EXPLAIN in tests and reviews): the first page, a
        page ``after`` a cursor, or a ``backward`` page; cursor values as ``$n``."""
        columns = [c.reversed() for c in self._columns] if backward else list(self._columns)
        values = [0] * len(columns) if (after or backward) else None
        return self._sql(columns, values, n_params)[0]

    def _position(self, row: Any) -> list[object]:
        return [row[c.name] for c in self._columns]

    async def page(
        self,
        conn: Fetcher,
        *params: object,
        after: str | None = None,
        before: str | None = None,
        limit: int | None = None,
        tenant: str | None = None,
    ) -> Page:
        """The page after ``after``, before ``before``, or the first page.

        Raises :class:`~scalekit.errors.CursorError` for a cursor that is not one of
        this query's (tampered, foreign, expired) and ``ConfigurationError`` for a
        ``limit`` outside ``1..max_limit`` or both cursors at once, before any query.
        """
        n = self.default_limit if limit is None else limit
        n = _validate.count(n, "limit", maximum=self.max_limit)
        if after is not None and before is not None:
            raise ConfigurationError("give after= or before=, not both")
        cursor = after if after is not None else before
        values: list[object] | None = None
        binding = self._binding(params, tenant)
        if cursor is not None:
            values = self._codec.decode(cursor, binding=binding).values
            if len(values) != len(self._columns):
                raise CursorError("malformed cursor: wrong number of values")
        backward = before is not None
        columns = [c.reversed() for c in self._columns] if backward else list(self._columns)
        sql, extra = self._sql(columns, values, len(params))
        extra[-1] = n + 1
        with query_errors(self._columns, len(params)):
            rows = list(await conn.fetch(sql, *params, *extra))
        more = len(rows) > n
        del rows[n:]

        def mint(row: Any) -> str:
            return self._codec.encode(self._position(row), binding=binding)

        if backward:
            rows.reverse()
            has_prev, has_next = more, True
        else:
            has_prev, has_next = cursor is not None, more
        return Page(
            items=rows,
            next_cursor=mint(rows[-1]) if rows and has_next else None,
            prev_cursor=mint(rows[0]) if rows and has_prev else None,
            has_next=has_next,
            has_prev=has_prev,
        )


class Offset:
    """``LIMIT/OFFSET`` pages for admin screens, refusing offsets past ``max_depth``.

    PostgreSQL reads and throws away every skipped row, so a deep offset costs as much
    as reading all of them; past ``max_depth`` rows the page is refused with a message
    pointing at :class:`Keyset`. The key is appended to the sort as for keyset pages,
    so pages are stable when sort values tie.
    """

    __slots__ = ("_columns", "_query", "max_depth", "max_limit")

    def __init__(
        self,
        query: str,
        order_by: Sequence[tuple[str, str] | str],
        *,
        key: str = "id",
        max_limit: int = 1000,
        max_depth: int = 10_000,
    ) -> None:
        self._query = _check_query(query)
        self._columns = parse_order_by(order_by, key=key, not_null=())
        self.max_limit = _validate.count(max_limit, "max_limit")
        self.max_depth = _validate.count(max_depth, "max_depth", minimum=0)

    def __repr__(self) -> str:
        return f"Offset(max_depth={self.max_depth}, max_limit={self.max_limit})"

    async def page(
        self, conn: Fetcher, *params: object, offset: int = 0, limit: int = 50
    ) -> OffsetPage:
        """Rows ``offset .. offset + limit - 1`` of the query in ``order_by`` order."""
        n = _validate.count(limit, "limit", maximum=self.max_limit)
        skip = _validate.count(offset, "offset", minimum=0)
        if skip > self.max_depth:
            raise ConfigurationError(
                f"offset {skip} is deeper than max_depth={self.max_depth}: PostgreSQL reads "
                "and discards every skipped row, so deep pages get slower linearly; use "
                "scalekit.pagination.Keyset (cursor pages) to go this deep"
            )
        p = len(params)
        sql = (
            f"SELECT * FROM ({self._query}) AS {ALIAS} ORDER BY {order_sql(self._columns)} "
            f"LIMIT ${p + 1} OFFSET ${p + 2}"
        )
        with query_errors(self._columns, len(params) + 2):
            rows = list(await conn.fetch(sql, *params, n + 1, skip))
        more = len(rows) > n
        del rows[n:]
        return OffsetPage(items=rows, offset=skip, limit=n, has_next=more, has_prev=skip > 0)

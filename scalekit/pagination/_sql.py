"""SQL building blocks shared by keyset and offset pages: identifiers, sort keys and
the keyset predicate. Pure code (strings and parameter lists), no I/O.

Values are never spliced into SQL: they go as ``$n`` parameters. Identifiers are
always double-quoted (embedded quotes doubled); names PostgreSQL could not store
as given (empty, a NUL byte, longer than 63 bytes, which it would silently
truncate to another name) are refused.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from scalekit.errors import ConfigurationError, CursorError

MAX_IDENTIFIER_BYTES = 63
ALIAS = '"_sk_page"'


class Fetcher(Protocol):
    """What a page runs on: an asyncpg connection or pool, or a PgPool."""

    async def fetch(self, query: str, *args: Any) -> list[Any]: ...


def quote_ident(name: object, what: str = "identifier") -> str:
    """``name`` as a quoted PostgreSQL identifier; refused if it cannot be one."""
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"{what} must be a non-empty str, got {name!r}")
    if "\x00" in name:
        raise ConfigurationError(f"{what} must not contain a NUL character: {name!r}")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_IDENTIFIER_BYTES:
        raise ConfigurationError(
            f"{what} {name!r} is longer than PostgreSQL's {MAX_IDENTIFIER_BYTES} bytes "
            "(it would be truncated to another name)"
        )
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigurationError(f"{what} {name!r} is not valid UTF-8") from None
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True, slots=True)
class SortColumn:
    """One column of a sort: its name, direction and where its NULLs go."""

    name: str
    desc: bool
    nulls_first: bool
    nullable: bool

    @property
    def quoted(self) -> str:
        return f"{ALIAS}.{quote_ident(self.name, 'sort column')}"

    def reversed(self) -> SortColumn:
        return SortColumn(self.name, not self.desc, not self.nulls_first, self.nullable)

    def sql(self) -> str:
        return (
            f"{self.quoted} {'DESC' if self.desc else 'ASC'} "
            f"NULLS {'FIRST' if self.nulls_first else 'LAST'}"
        )

    def spec(self) -> tuple[str, str, str, bool]:
        return (
            self.name,
            "desc" if self.desc else "asc",
            "first" if self.nulls_first else "last",
            self.nullable,
        )


_DIRECTIONS = {"asc": False, "desc": True}


def parse_order_by(
    order_by: object, *, key: str, not_null: Iterable[str]
) -> tuple[SortColumn, ...]:
    """``[("created_at", "desc"), ("id", "desc")]`` as sort columns, the key appended.

    A direction is ``asc`` or ``desc``, optionally followed by ``nulls first`` or
    ``nulls last`` (PostgreSQL's defaults: NULLs last ascending, first descending).
    ``key`` (unique, never NULL) is appended with the last column's direction when
    absent, so every row has one position. Columns other than ``key`` and those in
    ``not_null`` are treated as possibly NULL.
    """
    quote_ident(key, "key")
    known_not_null = set(not_null) | {key}
    for name in known_not_null:
        quote_ident(name, "not_null column")
    if isinstance(order_by, str | bytes) or not isinstance(order_by, Sequence) or not order_by:
        raise ConfigurationError(
            f'order_by must be a non-empty list of (column, "asc" | "desc") pairs, got {order_by!r}'
        )
    columns: list[SortColumn] = []
    seen: set[str] = set()
    for item in order_by:
        if isinstance(item, str):
            name, direction = item, "asc"
        elif isinstance(item, Sequence) and len(item) == 2:
            name, direction = item
        else:
            raise ConfigurationError(
                f'each order_by item must be a column or a (column, "asc" | "desc") pair, '
                f"got {item!r}"
            )
        quote_ident(name, "sort column")
        if name in seen:
            raise ConfigurationError(f"sort column {name!r} appears twice in order_by")
        seen.add(name)
        words = direction.lower().split() if isinstance(direction, str) else []
        if not words or words[0] not in _DIRECTIONS or len(words) not in (1, 3):
            raise ConfigurationError(
                f"direction of {name!r} must be 'asc' or 'desc' optionally followed by "
                f"'nulls first' or 'nulls last', got {direction!r}"
            )
        desc = _DIRECTIONS[words[0]]
        nulls_first = desc
        if len(words) == 3:
            if words[1] != "nulls" or words[2] not in ("first", "last"):
                raise ConfigurationError(
                    f"direction of {name!r}: expected 'nulls first' or 'nulls last' after "
                    f"{words[0]!r}, got {direction!r}"
                )
            nulls_first = words[2] == "first"
        columns.append(SortColumn(name, desc, nulls_first, name not in known_not_null))
    if key not in seen:
        columns.append(SortColumn(key, columns[-1].desc, columns[-1].desc, False))
    elif columns[-1].name != key:
        raise ConfigurationError(
            f"the key {key!r} must be the last sort column (columns after a unique key "
            "never decide anything)"
        )
    return tuple(columns)


def order_sql(columns: Sequence[SortColumn]) -> str:
    return ", ".join(c.sql() for c in columns)


class Params:
    """Appends values as ``$n`` after the caller's own parameters."""

    __slots__ = ("_first", "values")

    def __init__(self, first: int) -> None:
        self._first = first
        self.values: list[object] = []

    def add(self, value: object) -> str:
        self.values.append(value)
        return f"${self._first + len(self.values)}"


def _after_one(column: SortColumn, mark: str | None) -> str | None:
    """SQL true for the column's values strictly after the cursor's value (the
    parameter ``mark``, or ``None`` for a NULL value) in the scan order; ``None``
    when no value can be."""
    q = column.quoted
    if mark is None:
        # Among NULLs nothing is strictly after; non-NULLs are after iff NULLs come first.
        return f"{q} IS NOT NULL" if column.nulls_first else None
    cmp = f"{q} {'<' if column.desc else '>'} {mark}"
    if column.nullable and not column.nulls_first:
        return f"({cmp} OR {q} IS NULL)"
    return cmp


def keyset_predicate(
    columns: Sequence[SortColumn], values: Sequence[object], params: Params
) -> str:
    """SQL true exactly for the rows after the position ``values`` in ``columns``' order.

    When every column goes the same way, no cursor value is NULL and no NULL can sort
    after a value (a nullable column's NULLs are on the near side), it is one row-value
    comparison ``(a, b) < ($1, $2)``: PostgreSQL turns it into one index range scan.
    Otherwise it is the lexicographic expansion ``a > $1 OR (a = $1 AND b > $2) ...``
    with NULL-aware equality and NULL placement, so no row is skipped or repeated.
    """
    same_way = all(c.desc == columns[0].desc for c in columns)
    no_late_nulls = all(not c.nullable or c.nulls_first for c in columns)
    if same_way and no_late_nulls and all(v is not None for v in values):
        names = ", ".join(c.quoted for c in columns)
        marks = ", ".join(params.add(v) for v in values)
        return f"({names}) {'<' if columns[0].desc else '>'} ({marks})"
    terms: list[str] = []
    equal: list[str] = []
    for column, value in zip(columns, values, strict=True):
        mark = None if value is None else params.add(value)  # each value bound once
        after = _after_one(column, mark)
        if after is not None:
            terms.append(" AND ".join([*equal, after]))
        equal.append(f"{column.quoted} IS NULL" if mark is None else f"{column.quoted} = {mark}")
    if not terms:
        return "FALSE"
    return "(" + " OR ".join(f"({t})" for t in terms) + ")"


_ARGUMENT = re.compile(r"query argument \$(\d+)")


@contextlib.contextmanager
def query_errors(columns: Sequence[SortColumn], n_params: int) -> Iterator[None]:
    """Driver errors of a page as scalekit's: PostgreSQL's "column does not exist" is
    a ConfigurationError naming the sort columns; asyncpg refusing to encode one of the
    cursor's values (a parameter after the caller's ``n_params``: the column's type
    changed since the cursor was minted) is a CursorError, since the client can only
    start over. Anything else passes through."""
    try:
        yield
    except Exception as exc:
        if type(exc).__name__ == "DataError":
            found = _ARGUMENT.search(str(exc))
            if found is not None and int(found.group(1)) > n_params:
                raise CursorError(
                    "this cursor's values no longer fit the query's columns (did their "
                    "type change?); start from the first page"
                ) from exc
        if getattr(exc, "sqlstate", None) == "42703":
            names = ", ".join(repr(c.name) for c in columns)
            raise ConfigurationError(
                f"every sort column ({names}) must be a column of the query's select list: {exc}"
            ) from exc
        raise

"""asyncpg helpers for DataLoader: one ``= ANY($1)`` query per batch.

``row_loader(pool, "SELECT * FROM authors WHERE id = ANY($1)", key="id")`` loads one
row per key (``None`` when there is none); ``group_loader(pool, "SELECT * FROM
comments WHERE post_id = ANY($1) ORDER BY id", key="post_id")`` loads the list of
rows per key (``[]`` when there are none), in the query's order. ``pool`` is anything
with ``async fetch(query, *args)``: a :class:`~scalekit.pools.PgPool`, an
``asyncpg.Pool`` or a connection. The keys go as one array parameter, so the
statement text is the same for every batch (one prepared statement, or one unnamed
statement behind a transaction pooler).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from scalekit.batching._loader import DataLoader
from scalekit.errors import ConfigurationError

__all__ = ["Fetcher", "group_loader", "group_rows", "index_rows", "row_loader"]


class Fetcher(Protocol):
    async def fetch(self, query: str, *args: Any) -> list[Any]: ...


def _check(query: str, key: str) -> None:
    if not isinstance(query, str) or "$1" not in query:
        raise ConfigurationError(
            f"the query must take the keys as $1 (e.g. 'WHERE id = ANY($1)'), got {query!r}"
        )
    if not isinstance(key, str) or not key:
        raise ConfigurationError(f"key must name a result column, got {key!r}")


def index_rows(rows: Iterable[Mapping[str, Any]], key: str) -> dict[Hashable, Any]:
    """``{row[key]: row}`` (the last row wins if a key repeats)."""
    return {row[key]: row for row in rows}


def group_rows(rows: Iterable[Mapping[str, Any]], key: str) -> dict[Hashable, list[Any]]:
    """``{row[key]: [rows...]}`` keeping the rows' order."""
    groups: dict[Hashable, list[Any]] = {}
    for row in rows:
        groups.setdefault(row[key], []).append(row)
    return groups


def row_loader(
    pool: Fetcher,
    query: str,
    *,
    key: str = "id",
    max_batch_size: int | None = 1000,
    name: str | None = None,
) -> DataLoader[Any, Any]:
    """A loader of one row (or ``None``) per key, one ``query`` per batch."""
    _check(query, key)

    async def load_rows(keys: list[Any]) -> Mapping[Any, Any]:
        return index_rows(await pool.fetch(query, keys), key)

    return DataLoader(
        load_rows, max_batch_size=max_batch_size, default=None, name=name or f"rows:{key}"
    )


def group_loader(
    pool: Fetcher,
    query: str,
    *,
    key: str,
    max_batch_size: int | None = 1000,
    name: str | None = None,
) -> DataLoader[Any, Sequence[Any]]:
    """A loader of the list of rows per key (one-to-many), one ``query`` per batch.

    The lists are shared by every caller of the same key within a request: treat
    them as read-only.
    """
    _check(query, key)

    async def load_groups(keys: list[Any]) -> list[Sequence[Any]]:
        groups = group_rows(await pool.fetch(query, keys), key)
        return [groups.get(k, []) for k in keys]

    return DataLoader(load_groups, max_batch_size=max_batch_size, name=name or f"groups:{key}")

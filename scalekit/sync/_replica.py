"""The client side of a change feed: apply pages idempotently, commit at up_to_date."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from scalekit.errors import MustRefetch
from scalekit.sync._feed import ChangeFeed, ChangePage

__all__ = ["Replica"]

Apply = Callable[[ChangePage], Awaitable[None] | None]
Commit = Callable[[str], Awaitable[None] | None]


async def _call(fn: Callable[[Any], Awaitable[None] | None], arg: Any) -> None:
    result = fn(arg)
    if inspect.isawaitable(result):
        await result


class Replica:
    """Keeps a local copy of a feed's rows: a mapping ``{key: row}`` or a callback.

    ``target`` is a ``MutableMapping`` (cleared on a page with ``reset``, deletes
    popped, upserts stored under ``row[feed.key]``) or a callable taking each
    :class:`ChangePage` (sync or async; it must honour ``page.reset``). Applying a
    page twice is harmless, so a pass interrupted half-way is simply replayed.

    ``cursor`` is the last *committed* cursor: it moves only when a pass reaches
    ``up_to_date``, and ``on_commit(cursor)`` (sync or async) is then called to
    persist it. On :class:`~scalekit.errors.MustRefetch` a mapping target is
    rebuilt from a full sync; a callable target gets the error (its owner decides).
    """

    __slots__ = ("_apply", "_mapping", "cursor", "feed", "on_commit", "pages")

    def __init__(
        self,
        feed: ChangeFeed,
        target: MutableMapping[Any, Any] | Apply,
        *,
        cursor: str | None = None,
        on_commit: Commit | None = None,
    ) -> None:
        self.feed = feed
        self.cursor = cursor
        self.on_commit = on_commit
        self.pages = 0
        if isinstance(target, MutableMapping):
            self._mapping: MutableMapping[Any, Any] | None = target
            self._apply: Apply = self._apply_to_mapping
        elif callable(target):
            self._mapping = None
            self._apply = target
        else:
            raise TypeError("target must be a MutableMapping or a callable taking a ChangePage")

    def _apply_to_mapping(self, page: ChangePage) -> None:
        mapping = self._mapping
        assert mapping is not None
        if page.reset:
            mapping.clear()
        for key in page.deletes:
            mapping.pop(key, None)
        key = self.feed.key
        for row in page.upserts:
            mapping[row[key]] = row

    async def sync(
        self,
        conn: Any,
        *,
        limit: int = 500,
        where: str | None = None,
        params: Sequence[object] = (),
        tenant: str | None = None,
    ) -> ChangePage:
        """Read and apply pages until the copy is up to date; returns the last page."""
        try:
            return await self._pass(conn, self.cursor, limit, where, params, tenant)
        except MustRefetch:
            if self._mapping is None:
                raise
            return await self._pass(conn, None, limit, where, params, tenant)

    async def _pass(
        self,
        conn: Any,
        cursor: str | None,
        limit: int,
        where: str | None,
        params: Sequence[object],
        tenant: str | None,
    ) -> ChangePage:
        while True:
            page = await self.feed.changes(
                conn, cursor, limit=limit, where=where, params=params, tenant=tenant
            )
            await _call(self._apply, page)
            self.pages += 1
            cursor = page.cursor
            if page.up_to_date:
                self.cursor = cursor
                if self.on_commit is not None:
                    await _call(self.on_commit, cursor)
                return page

"""Keyset pagination with signed cursors, and bounded offset pagination, on PostgreSQL.

``Keyset(query, order_by=[("created_at", "desc"), ("id", "desc")])`` pages through
``query`` by position (``WHERE (created_at, id) < ($n, $m)``), so page 10,000 costs
what page 1 costs; its cursors are HMAC-signed, versioned, URL-safe and bound to the
query, so a client can neither forge nor transplant one
(:class:`~scalekit.errors.CursorError`). ``Offset`` serves numbered pages for admin
screens and refuses offsets past ``max_depth``. Both run on anything with
``async fetch(sql, *args)``: an asyncpg connection or pool, or a
:class:`~scalekit.pools.PgPool` (through PgBouncer in transaction mode too). asyncpg
itself is never imported here.
"""

from scalekit.pagination._keyset import Keyset, Offset, OffsetPage, Page

__all__ = ["Keyset", "Offset", "OffsetPage", "Page"]

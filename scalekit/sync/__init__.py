"""Delta sync on PostgreSQL: "what changed since my last sync", never missing a row.

``install_change_tracking(conn, "messages", key="id")`` stamps every written row with
its transaction id (``xid8``) and records deletions as tombstones;
``ChangeFeed("messages").changes(conn, cursor)`` returns pages of upserts and
deletes up to a watermark below which every transaction has ended, so rows of
transactions committing out of order are never skipped; ``Replica`` applies the
pages to a local mapping or a callback. Works on an asyncpg connection or pool and
on :class:`~scalekit.pools.PgPool`, through PgBouncer in transaction mode, with no
replication slot and no superuser. asyncpg itself is never imported here.
"""

from scalekit.sync._feed import (
    ChangeFeed,
    ChangePage,
    FeedStats,
    install_change_tracking,
    uninstall_change_tracking,
)
from scalekit.sync._replica import Replica

__all__ = [
    "ChangeFeed",
    "ChangePage",
    "FeedStats",
    "Replica",
    "install_change_tracking",
    "uninstall_change_tracking",
]

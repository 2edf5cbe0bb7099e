"""Delta sync with a transaction-id watermark: install, read changes, purge, observe.

Why an ``xid8`` and not a timestamp: a row stamped at statement start becomes
visible at commit, so a reader that remembers "the newest stamp I saw" skips every
row whose transaction started earlier and committed later. Here each row carries
the id of the transaction that last wrote it, and a sync pass only reads rows
stamped below ``pg_snapshot_xmin(pg_current_snapshot())``: every transaction below
that bound has ended, so nothing can still appear behind the cursor. Rows of
transactions still open are read by the next pass. Deletions are tombstones on the
same clock. Every read of one page is one REPEATABLE READ, READ ONLY transaction on
one connection (plain statements, no session state, no replication slot), so it
runs through PgBouncer in transaction mode and needs no superuser.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from scalekit import _validate
from scalekit._clock import Clock
from scalekit.errors import ConfigurationError, CursorError, MustRefetch
from scalekit.observability._metrics import default_registry as _metrics
from scalekit.pagination._cursor import CursorCodec, digest
from scalekit.sync._schema import DELETED_AT, XID, Names, check_keep, install_sql, names
from scalekit.sync._schema import uninstall_sql as _uninstall_sql

__all__ = [
    "ChangeFeed",
    "ChangePage",
    "FeedStats",
    "install_change_tracking",
    "uninstall_change_tracking",
]

_UPSERT, _DELETE = 1, 0
_INSTALL_LOCK = "scalekit change tracking"


@contextlib.asynccontextmanager
async def _connection(target: Any) -> AsyncIterator[Any]:
    """One connection: ``target`` itself, or one acquired from a pool / PgPool."""
    if hasattr(target, "acquire") and not hasattr(target, "transaction"):
        async with target.acquire() as con:
            yield con
    else:
        yield target


@contextlib.contextmanager
def _schema_errors(n: Names) -> Iterator[None]:
    """PostgreSQL's "no such table / column / function" as a ConfigurationError."""
    try:
        yield
    except Exception as exc:
        if getattr(exc, "sqlstate", None) in ("42P01", "42703", "42883"):
            raise ConfigurationError(
                f"change tracking is not installed on {n.label!r} (or the filter names a "
                f"column the tombstones do not keep): {exc}; run install_change_tracking()"
            ) from exc
        raise


async def install_change_tracking(
    conn: Any, table: str, *, key: str = "id", keep: Iterable[str] = (), schema: str | None = None
) -> None:
    """Add change tracking to ``table`` (idempotent): the ``_sk_xid`` column and its
    index, the triggers and the tombstone table.

    ``key`` is the table's unique, non-NULL key; ``keep`` lists the columns a feed
    filters on (e.g. the owner's id): tombstones keep them, so a filtered feed still
    sees deletions and rows moving out of its filter. Adding the column rewrites the
    table once (every existing row is stamped with the installing transaction). Needs
    the right to ALTER the table, not a superuser.
    """
    n = names(table, key, schema)
    kept = check_keep(keep, key)
    async with _connection(conn) as con, con.transaction():
        await con.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", _INSTALL_LOCK)
        found = await con.fetch(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type "
            "FROM pg_attribute a WHERE a.attrelid = $1::regclass AND a.attnum > 0 "
            "AND NOT a.attisdropped AND a.attname = ANY($2::text[])",
            n.qtable,
            [key, *kept],
        )
        types = {r["attname"]: r["type"] for r in found}
        missing = [c for c in (key, *kept) if c not in types]
        if missing:
            raise ConfigurationError(f"table {n.label!r} has no column(s) {missing!r}")
        await con.execute(install_sql(n, [(c, types[c]) for c in (key, *kept)])[0])
        existing = await con.fetchrow(f"SELECT key, keep FROM {n.qmeta} WHERE tbl = $1", n.label)
        if existing is not None and (existing["key"], list(existing["keep"])) != (key, list(kept)):
            raise ConfigurationError(
                f"{n.label!r} is tracked already with key={existing['key']!r}, "
                f"keep={list(existing['keep'])!r}; uninstall_change_tracking() first"
            )
        for statement in install_sql(n, [(c, types[c]) for c in (key, *kept)])[1:]:
            await con.execute(statement)
        await con.execute(
            f"INSERT INTO {n.qmeta} (tbl, key, keep) VALUES ($1, $2, $3) "
            "ON CONFLICT (tbl) DO NOTHING",
            n.label,
            key,
            list(kept),
        )


async def uninstall_change_tracking(
    conn: Any, table: str, *, key: str = "id", schema: str | None = None
) -> None:
    """Remove what :func:`install_change_tracking` added to ``table`` (idempotent).

    Every cursor minted for the table becomes a :class:`~scalekit.errors.MustRefetch`
    when tracking is installed again.
    """
    n = names(table, key, schema)
    async with _connection(conn) as con, con.transaction():
        await con.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", _INSTALL_LOCK)
        for statement in _uninstall_sql(n):
            await con.execute(statement)
        if await con.fetchval("SELECT to_regclass($1) IS NOT NULL", n.qmeta):
            await con.execute(f"DELETE FROM {n.qmeta} WHERE tbl = $1", n.label)


@dataclass(frozen=True, slots=True)
class ChangePage:
    """One page of changes: apply ``deletes`` and ``upserts`` (disjoint by key), then
    keep ``cursor`` for the next call.

    ``reset`` is true on the first page of a full sync (``cursor=None``): replace the
    local copy rather than merge into it. ``up_to_date`` is true when the page
    reached the watermark: the copy then equals the table as of one consistent point
    (the safe moment to persist the cursor).
    """

    upserts: list[dict[str, Any]]
    deletes: list[Any]
    cursor: str
    up_to_date: bool
    reset: bool


_FEED = ("feed",)
_PAGES = _metrics.counter("scalekit_sync_pages_total", "Change pages served.", labels=_FEED)
_RESETS = _metrics.counter(
    "scalekit_sync_resets_total", "Pages that restarted a client's sync (reset).", labels=_FEED
)
_ROWS = _metrics.histogram(
    "scalekit_sync_page_rows",
    "Upserts and deletes per change page.",
    labels=_FEED,
    unit="rows",
    buckets=(0, 1, 10, 50, 100, 500, 1000, 5000, 10_000, 100_000),
)
_LAG = _metrics.gauge(
    "scalekit_sync_watermark_lag_seconds",
    "Seconds since the oldest open transaction began, at the last ChangeFeed.stats().",
    labels=_FEED,
    unit="seconds",
)
_XID_LAG = _metrics.gauge(
    "scalekit_sync_xid_lag",
    "Transaction ids between the watermark and the next one, at the last stats().",
    labels=_FEED,
)


@dataclass(frozen=True, slots=True)
class FeedStats:
    """``watermark_lag``: seconds since the oldest transaction still open began (its
    changes, and everything committed after it began, wait for the next pass; ``0.0``
    when none is open); ``xid_lag``: transaction ids between the watermark and the
    next one; ``floor``: the highest purged tombstone's xid, or ``None``;
    ``complete``: whether this role could see every session's transaction."""

    watermark_lag: float
    xid_lag: int
    floor: int | None
    complete: bool


@dataclass(frozen=True, slots=True)
class _Position:
    xid: int  # everything before (xid, kind, key) was returned
    kind: int  # -1: the start of xid (nothing of it returned yet)
    key: Any
    hi: int | None  # the pass's watermark; None between passes
    system: str
    initial: bool


class ChangeFeed:
    """Changes of one tracked table, as pages of upserts and deletes.

    ``secret`` (or ``SCALEKIT_CURSOR_SECRET``) signs the cursors; ``max_age`` refuses
    cursors older than that as :class:`~scalekit.errors.CursorError`.
    """

    __slots__ = (
        "__weakref__",
        "_codec",
        "_lag",
        "_n",
        "_pages",
        "_resets",
        "_rows",
        "_xids",
        "key",
    )

    def __init__(
        self,
        table: str,
        *,
        key: str = "id",
        schema: str | None = None,
        secret: str | bytes | None = None,
        max_age: float | timedelta | None = None,
        clock: Clock | Callable[[], float] | None = None,
    ) -> None:
        self._n = names(table, key, schema)
        self.key = key
        self._codec = CursorCodec(
            secret, purpose="changefeed", what="ChangeFeed", max_age=max_age, clock=clock
        )
        label = self._n.label[:128]
        self._pages = _PAGES.attach(self, label)
        self._resets = _RESETS.attach(self, label)
        self._rows = _ROWS.attach(self, label)
        # the lag is the table's, whichever feed measured it last: one shared child
        self._lag = _LAG.labels(label)
        self._xids = _XID_LAG.labels(label)

    def __repr__(self) -> str:
        return f"ChangeFeed({self._n.label!r}, key={self.key!r})"

    def _binding(self, where: str | None, params: Sequence[object], tenant: str | None) -> bytes:
        n = self._n
        return digest("changefeed", n.schema, n.table, n.key, where, list(params), tenant)

    def _decode(self, cursor: str, binding: bytes) -> _Position:
        decoded = self._codec.decode(cursor, binding=None)
        if decoded.binding != binding:
            raise MustRefetch(
                "this cursor was minted for another table, key, filter or tenant",
                reason="filter",
            )
        v = decoded.values
        if not (
            len(v) == 6
            and type(v[0]) is int
            and type(v[1]) is int
            and v[1] in (-1, 0, 1)
            and (v[3] is None or type(v[3]) is int)
            and isinstance(v[4], str)
            and isinstance(v[5], bool)
        ):
            raise CursorError("malformed change-feed cursor")
        return _Position(v[0], int(v[1]), v[2], v[3], v[4], v[5])

    def _encode(self, p: _Position, binding: bytes) -> str:
        values = [p.xid, p.kind, p.key, p.hi, p.system, p.initial]
        return self._codec.encode(values, binding=binding)

    async def changes(
        self,
        conn: Any,
        cursor: str | None = None,
        *,
        limit: int = 500,
        where: str | None = None,
        params: Sequence[object] = (),
        tenant: str | None = None,
    ) -> ChangePage:
        """The next page of changes after ``cursor`` (``None``: a full sync).

        ``where`` is an SQL condition on the table's columns with ``$1..$n`` bound to
        ``params`` (e.g. ``"owner_id = $1"``); it is applied to the tombstones too, so
        it may only name the key and the ``keep`` columns. The cursor is bound to the
        table, the filter, its parameters and ``tenant``.

        Raises :class:`~scalekit.errors.MustRefetch` when the cursor can no longer be
        continued and :class:`~scalekit.errors.CursorError` when it is not one of ours.
        """
        n = self._n
        size = _validate.count(limit, "limit", maximum=100_000)
        if where is not None and (not isinstance(where, str) or not where.strip()):
            raise ConfigurationError(f"where must be a non-empty SQL condition, got {where!r}")
        params = list(params)
        binding = self._binding(where, params, tenant)
        pos = None if cursor is None else self._decode(cursor, binding)
        with _schema_errors(n):
            async with (
                _connection(conn) as con,
                con.transaction(isolation="repeatable_read", readonly=True),
            ):
                return await self._page(con, n, pos, size, where, params, binding)

    async def _page(
        self,
        con: Any,
        n: Names,
        pos: _Position | None,
        size: int,
        where: str | None,
        params: list[object],
        binding: bytes,
    ) -> ChangePage:
        head = await con.fetchrow(
            "SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS hi, "
            "pg_snapshot_xmax(pg_current_snapshot())::text AS xmax, "
            "(SELECT system_identifier FROM pg_control_system())::text AS system, "
            f"(SELECT floor::text FROM {n.qmeta} WHERE tbl = $1) AS floor, "
            f"EXISTS (SELECT FROM {n.qmeta} WHERE tbl = $1) AS installed",
            n.label,
        )
        if not head["installed"]:
            raise ConfigurationError(
                f"change tracking is not installed on {n.label!r}; "
                "run install_change_tracking() first"
            )
        system: str = head["system"]
        floor = None if head["floor"] is None else int(head["floor"])
        if pos is None:
            pos = _Position(0, -1, None, None, system, True)
        elif pos.system != system:
            raise MustRefetch(
                "this cursor was minted on another database cluster", reason="cluster"
            )
        elif not pos.initial and floor is not None and floor >= pos.xid:
            raise MustRefetch(
                "this cursor is older than the tombstone floor (tombstones it needs were purged)",
                reason="purged",
            )
        reset = pos.initial and pos.xid == 0 and pos.kind == -1
        hi = pos.hi if pos.hi is not None else int(head["hi"])
        filt = f"({where}) AND " if where is not None else ""
        p = len(params)

        def query(source: str, kind: int, columns: str) -> tuple[str, list[object]]:
            # position predicate: (xid, kind, key) strictly after pos, in index order
            args: list[object] = [str(pos.xid)]
            x = f"${p + 1}::text::xid8"
            if pos.kind == -1 or pos.kind < kind:
                cond = f"{XID} >= {x}"
            elif pos.kind > kind:
                cond = f"{XID} > {x}"
            else:
                args.append(pos.key)
                cond = f"({XID}, {n.qkey}) > ({x}, ${p + 2})"
            args += [str(hi), size + 1]
            k = p + len(args)
            sql = (
                f"SELECT {XID}::text AS _sk_xid_text, {columns} FROM {source} "
                f"WHERE {filt}{cond} AND {XID} < ${k - 1}::text::xid8 "
                f"ORDER BY {XID}, {n.qkey} LIMIT ${k}"
            )
            return sql, args

        sql, args = query(n.qtable, _UPSERT, "*")
        rows = await con.fetch(sql, *params, *args)
        items: list[tuple[int, int, Any, Any]] = [
            (int(r["_sk_xid_text"]), _UPSERT, r[n.key], r) for r in rows
        ]
        if not pos.initial or reset:
            sql, args = query(n.qtomb, _DELETE, n.qkey)
            if pos.initial:
                # A full sync starts from nothing, so old deletions do not matter; the
                # first page still plans the filter on the tombstones (LIMIT 0), so a
                # filter they cannot answer fails now, not at the first delta.
                args[-1] = 0
            tombs = await con.fetch(sql, *params, *args)
            items += [(int(r["_sk_xid_text"]), _DELETE, r[n.key], None) for r in tombs]
            # each list is in (xid, key) order; a stable sort on (xid, kind) keeps the
            # server's key order (its collation) inside each transaction
            items.sort(key=lambda item: (item[0], item[1]))
        more = len(items) > size
        del items[size:]
        latest: dict[Any, tuple[int, Any]] = {}
        for _xid, kind, key, row in items:  # later wins: a delete then a re-insert is an upsert
            latest.pop(key, None)
            latest[key] = (kind, row)
        upserts = [
            {k: v for k, v in row.items() if k not in ("_sk_xid_text", XID)}
            for kind, row in latest.values()
            if kind == _UPSERT
        ]
        deletes = [key for key, (kind, _) in latest.items() if kind == _DELETE]
        if more:
            xid, kind, key, _ = items[-1]
            nxt = _Position(xid, kind, key, hi, system, pos.initial)
        else:
            nxt = _Position(hi, -1, None, None, system, False)
        self._pages.inc()
        self._rows.observe(len(upserts) + len(deletes))
        if reset:
            self._resets.inc()
        return ChangePage(
            upserts=upserts,
            deletes=deletes,
            cursor=self._encode(nxt, binding),
            up_to_date=not more,
            reset=reset,
        )

    async def stats(self, conn: Any) -> FeedStats:
        """The watermark lag, the xid lag and the tombstone floor (one statement).

        The lag is measured over the transactions this role can see in
        ``pg_stat_activity`` (all of them for a superuser or a member of
        ``pg_read_all_stats``); ``complete`` says whether that was all of them.
        """
        n = self._n
        row = await conn.fetchrow(
            "SELECT (SELECT extract(epoch FROM clock_timestamp() - min(began))::float8 FROM ("
            "          SELECT xact_start AS began FROM pg_stat_activity"
            "          WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()"
            "          UNION ALL SELECT prepared FROM pg_prepared_xacts) open) AS lag,"
            "       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)"
            "        OR pg_has_role('pg_read_all_stats', 'MEMBER') AS complete,"
            "       (pg_snapshot_xmax(pg_current_snapshot())::text::numeric"
            "        - pg_snapshot_xmin(pg_current_snapshot())::text::numeric)::bigint AS xids,"
            f"      (SELECT floor::text FROM {n.qmeta} WHERE tbl = $1) AS floor",
            n.label,
        )
        floor = None if row["floor"] is None else int(row["floor"])
        stats = FeedStats(
            watermark_lag=max(float(row["lag"] or 0.0), 0.0),
            xid_lag=int(row["xids"]),
            floor=floor,
            complete=bool(row["complete"]),
        )
        self._lag.set(stats.watermark_lag)  # the gauges hold the last measure
        self._xids.set(stats.xid_lag)
        return stats

    async def purge_tombstones(
        self,
        conn: Any,
        *,
        older_than: float | timedelta,
        batch_size: int = 1000,
        max_batches: int | None = None,
    ) -> int:
        """Delete tombstones older than ``older_than`` (server time), ``batch_size`` per
        transaction, and raise the floor to the highest xid deleted; returns how many.

        A client whose cursor is at or below the floor gets
        :class:`~scalekit.errors.MustRefetch`: keep tombstones longer than your
        clients stay offline. Run it from a scheduled job; concurrent runs skip each
        other's rows.
        """
        n = self._n
        age = timedelta(seconds=_validate.duration(older_than, "older_than", allow_zero=True))
        batch = _validate.count(batch_size, "batch_size", maximum=1_000_000)
        rounds = None if max_batches is None else _validate.count(max_batches, "max_batches")
        sql = (
            f"WITH victims AS (SELECT ctid FROM {n.qtomb} "
            f"  WHERE {DELETED_AT} < clock_timestamp() - $1::interval "
            f"  ORDER BY {DELETED_AT} LIMIT $2 FOR UPDATE SKIP LOCKED), "
            f"gone AS (DELETE FROM {n.qtomb} WHERE ctid = ANY(ARRAY(SELECT ctid FROM victims)) "
            f"  RETURNING {XID}), "
            "top AS (SELECT max(" + XID + ") AS x, count(*) AS n FROM gone), "
            f"raised AS (UPDATE {n.qmeta} m SET floor = GREATEST(m.floor, top.x) FROM top "
            "  WHERE m.tbl = $3 AND top.x IS NOT NULL RETURNING 1) "
            "SELECT n FROM top"
        )
        total = done = 0
        with _schema_errors(n):
            while rounds is None or done < rounds:
                deleted = int(await conn.fetchval(sql, age, batch, n.label))
                total += deleted
                done += 1
                if deleted < batch:
                    break
        return total

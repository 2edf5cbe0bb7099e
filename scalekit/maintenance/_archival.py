"""Archival: keep the newest N rows of every parent hot, move the older ones away."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from scalekit import _validate
from scalekit._clock import Clock
from scalekit.errors import ConfigurationError, MaintenanceRefused
from scalekit.maintenance._db import (
    CHECKPOINT_TABLE,
    TIME_TYPES,
    BatchLoop,
    Checkpoints,
    JobResult,
    Table,
    connection,
    ident,
    normalise_batch_settings,
    table,
)

__all__ = ["Archival"]


@dataclass(frozen=True, slots=True)
class Archival:
    """Keep the newest ``keep`` rows of every ``parent`` in ``table``; archive the rest.

    Parents are walked in keyset batches (``parents_per_batch`` at a time, resumed
    from a checkpoint) through an index on ``(parent, order_by, key)``. With
    ``idle_for``, only parents whose newest row is older than that are touched.
    Each batch is one statement in its own transaction:

    - ``archive_table=``: ``WITH moved AS (DELETE ... RETURNING *) INSERT INTO
      archive ...``. A row another transaction updates meanwhile is moved in the
      version that transaction committed (the ``DELETE`` waits for it), so it is
      neither lost nor copied twice. The archive must have every column of the table
      with the same type (extra columns need a default or must be nullable).
    - ``soft_column=``: a boolean column set to ``true`` instead (rows stay where
      they are; readers filter them out).

    ``await archival.restore(db, parent)`` brings a parent's archived rows back.
    """

    table: str
    _: KW_ONLY
    parent: str
    order_by: str
    keep: int
    archive_table: str | None = None
    soft_column: str | None = None
    key: str = "id"
    idle_for: float | timedelta | None = None
    parents_per_batch: int = 100
    pause: float | timedelta = 0.05
    lock_timeout: float | timedelta = 1.0
    statement_timeout: float | timedelta = 30.0
    retries: int = 3
    name: str | None = None
    checkpoint_table: str = CHECKPOINT_TABLE
    clock: Clock | Callable[[], float] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for what in ("table", "parent", "order_by", "key"):
            _validate.name(getattr(self, what), what)
        set_(self, "keep", _validate.count(self.keep, "keep"))
        if (self.archive_table is None) == (self.soft_column is None):
            raise ConfigurationError("Archival needs exactly one of archive_table= or soft_column=")
        if self.archive_table is not None:
            _validate.name(self.archive_table, "archive_table")
        if self.soft_column is not None:
            _validate.name(self.soft_column, "soft_column")
        if self.idle_for is not None:
            set_(self, "idle_for", timedelta(seconds=_validate.duration(self.idle_for, "idle_for")))
        set_(
            self,
            "parents_per_batch",
            _validate.count(self.parents_per_batch, "parents_per_batch", maximum=100_000),
        )
        normalise_batch_settings(self, f"archival:{self.table}")

    @property
    def job_name(self) -> str:
        return str(self.name)

    async def __call__(self, db: Any) -> JobResult:
        return await self.run(db)

    # -- checks ----------------------------------------------------------------
    async def _plan(self, con: Any) -> tuple[Table, Table | None]:
        t = await table(con, self.table)
        t.column(self.parent, "parent")
        t.column(self.order_by, "order_by")
        t.column(self.key, "key")
        t.require_unique(self.key, "key")
        if not t.has_index([self.parent, self.order_by, self.key], same_direction_from=1):
            raise MaintenanceRefused(
                f"{t.sql} has no btree index on ({self.parent}, {self.order_by} DESC, "
                f"{self.key} DESC); parents are walked and their newest rows found through it",
                fix=f"CREATE INDEX CONCURRENTLY ON {t.sql} ({ident(self.parent)}, "
                f"{ident(self.order_by)} DESC, {ident(self.key)} DESC);",
            )
        if self.idle_for is not None:
            t.column(self.order_by, "order_by (compared with idle_for)", types=TIME_TYPES)
        if self.soft_column is not None:
            t.column(self.soft_column, "soft_column", types=frozenset({"boolean"}))
            return t, None
        assert self.archive_table is not None
        a = await table(con, self.archive_table, "archive_table", must_exist=False)
        if not a.oid:
            raise MaintenanceRefused(
                f"archive_table {self.archive_table!r} does not exist",
                fix=f"CREATE TABLE {self.archive_table} (LIKE {t.sql} INCLUDING DEFAULTS);",
            )
        if a.oid == t.oid:
            raise MaintenanceRefused("archive_table is the table itself")
        _check_same_columns(t, a)
        return t, a

    # -- run ---------------------------------------------------------------------
    async def run(self, db: Any) -> JobResult:
        """Archive, parent batch after parent batch, from the checkpoint to the end."""
        ckpt = Checkpoints(self.checkpoint_table)
        async with connection(db) as con:
            t, a = await self._plan(con)
            await ckpt.ensure(con)
            saved = await ckpt.load(con, self.job_name)
            idle_cutoff: datetime | None = None
            if self.idle_for is not None:
                idle_cutoff = await con.fetchval("SELECT now() - $1::interval", self.idle_for)
        position = saved[1] if saved is not None else None
        if saved is not None and saved[0] is not None and self.idle_for is not None:
            idle_cutoff = saved[0]  # the interrupted run's
        p, o, k = ident(self.parent), ident(self.order_by), ident(self.key)
        ptype = t.columns[self.parent].type
        otype = t.columns[self.order_by].type
        live = f" AND {ident(self.soft_column)} IS NOT TRUE" if self.soft_column else ""
        # $1 parents per batch, $2 rows kept, [$3 idle cutoff], then the position
        n_pos = 4 if idle_cutoff is not None else 3
        after = f"WHERE {p} > ${n_pos}::text::{ptype}"
        idle = (
            f"WHERE (SELECT {o} FROM {t.sql} WHERE {p} = parents.p ORDER BY {o} DESC, {k} DESC "
            f"LIMIT 1) < $3::timestamptz::{otype}"
            if idle_cutoff is not None
            else ""
        )
        if a is None:
            assert self.soft_column is not None
            act = f"""moved AS (
                UPDATE {t.sql} AS x SET {ident(self.soft_column)} = true FROM doomed
                WHERE x.{k} = doomed.k AND x.{ident(self.soft_column)} IS NOT TRUE
                RETURNING 1
            ), done AS (SELECT count(*) AS n FROM moved)"""
        else:
            cols = ", ".join(ident(c.name) for c in t.columns.values() if not c.generated)
            act = f"""moved AS (
                DELETE FROM {t.sql} AS x USING doomed WHERE x.{k} = doomed.k RETURNING x.*
            ), ins AS (
                INSERT INTO {a.sql} ({cols}) OVERRIDING SYSTEM VALUE
                SELECT {cols} FROM moved RETURNING 1
            ), done AS (SELECT count(*) AS n FROM ins)"""

        def statement(first: bool) -> str:
            walk_from = "" if first else after
            return f"""
            WITH RECURSIVE walk AS (
                (SELECT {p} AS p FROM {t.sql} {walk_from} ORDER BY {p} LIMIT 1)
                UNION ALL
                SELECT (SELECT {p} FROM {t.sql} WHERE {p} > walk.p ORDER BY {p} LIMIT 1)
                FROM walk WHERE walk.p IS NOT NULL
            ), parents AS (
                SELECT p FROM walk WHERE p IS NOT NULL LIMIT $1
            ), doomed AS (
                SELECT r.k FROM (SELECT p FROM parents {idle}) AS e, LATERAL (
                    SELECT {k} AS k FROM {t.sql} WHERE {p} = e.p{live}
                    ORDER BY {o} DESC, {k} DESC OFFSET $2
                ) AS r
            ), {act}
            SELECT (SELECT n FROM done) AS moved,
                   (SELECT to_jsonb(p) #>> '{{}}' FROM parents ORDER BY p DESC LIMIT 1) AS last
            """

        first_sql, after_sql = statement(True), statement(False)
        per_batch, keep = self.parents_per_batch, self.keep

        async def step(con: Any, pos: list[str] | None) -> tuple[int, list[str] | None]:
            args: list[Any] = [per_batch, keep]
            if idle_cutoff is not None:
                args.append(idle_cutoff)
            if pos is None:
                row = await con.fetchrow(first_sql, *args)
            else:
                row = await con.fetchrow(after_sql, *args, pos[0])
            last = row["last"]
            return int(row["moved"]), None if last is None else [last]

        return await BatchLoop.of(self, ckpt, idle_cutoff).run(db, step, position)

    async def restore(self, db: Any, parent: Any) -> int:
        """Bring every archived row of ``parent`` back into the table (one statement);
        returns how many. Columns only the archive has are dropped."""
        async with connection(db) as con:
            t, a = await self._plan(con)
            p = ident(self.parent)
            if a is None:
                assert self.soft_column is not None
                s = ident(self.soft_column)
                status = await con.execute(
                    f"UPDATE {t.sql} SET {s} = false WHERE {p} = $1 AND {s}", parent
                )
            else:
                cols = ", ".join(ident(c.name) for c in t.columns.values() if not c.generated)
                status = await con.execute(
                    f"WITH moved AS (DELETE FROM {a.sql} WHERE {p} = $1 RETURNING *) "
                    f"INSERT INTO {t.sql} ({cols}) OVERRIDING SYSTEM VALUE "
                    f"SELECT {cols} FROM moved",
                    parent,
                )
        return int(str(status).rsplit(" ", 1)[-1])


def _check_same_columns(t: Table, a: Table) -> None:
    fixes: list[str] = []
    reasons: list[str] = []
    for col in t.columns.values():
        if col.generated:
            continue
        other = a.columns.get(col.name)
        if other is None:
            reasons.append(f"{col.name!r} is missing")
            fixes.append(f"ALTER TABLE {a.sql} ADD COLUMN {ident(col.name)} {col.type};")
        elif other.type != col.type:
            reasons.append(f"{col.name!r} is {other.type}, not {col.type}")
            fixes.append(f"ALTER TABLE {a.sql} ALTER COLUMN {ident(col.name)} TYPE {col.type};")
        elif other.generated:
            reasons.append(f"{col.name!r} is a generated column in the archive")
            fixes.append(f"ALTER TABLE {a.sql} ALTER COLUMN {ident(col.name)} DROP EXPRESSION;")
    for col in a.columns.values():
        if col.name not in t.columns and col.not_null and not col.has_default:
            reasons.append(f"{col.name!r} is only in the archive, NOT NULL and without default")
            fixes.append(f"ALTER TABLE {a.sql} ALTER COLUMN {ident(col.name)} DROP NOT NULL;")
    if reasons:
        raise MaintenanceRefused(
            f"archive_table {a.sql} does not match {t.sql}: " + "; ".join(reasons),
            fix="\n".join(fixes),
        )

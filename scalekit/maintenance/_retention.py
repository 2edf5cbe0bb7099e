"""Retention: delete rows older than a cutoff in keyset-ordered batches."""

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
    aware,
    connection,
    ident,
    normalise_batch_settings,
    table,
)

__all__ = ["Retention"]


@dataclass(frozen=True, slots=True)
class Retention:
    """Delete the rows of ``table`` whose ``time_column`` is older than a cutoff.

    The cutoff is ``keep`` before the server's ``now()`` (taken once per run) or an
    explicit, timezone-aware ``cutoff``. Rows are walked in ``(time_column, key)``
    order through an index on those columns, ``batch_size`` at a time, each batch
    one ``DELETE`` in its own transaction (``SET LOCAL lock_timeout`` and
    ``statement_timeout``), resuming after the last row seen, so no batch rescans
    what earlier batches passed. The position and the cutoff are checkpointed in
    the batch's transaction: a run that is cancelled or loses its connection
    continues where it stopped, with the same cutoff.

    ``await retention(db)`` (or ``run``) deletes; ``await retention.count(db)``
    counts what a run would delete (the dry run). ``db`` is a
    :class:`~scalekit.pools.PgPool`, an ``asyncpg.Pool`` or an ``asyncpg.Connection``.
    """

    table: str
    time_column: str
    _: KW_ONLY
    keep: float | timedelta | None = None
    cutoff: datetime | None = None
    key: str = "id"
    batch_size: int = 5000
    pause: float | timedelta = 0.05
    lock_timeout: float | timedelta = 1.0
    statement_timeout: float | timedelta = 30.0
    retries: int = 3
    name: str | None = None
    checkpoint_table: str = CHECKPOINT_TABLE
    clock: Clock | Callable[[], float] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        _validate.name(self.table, "table")
        _validate.name(self.time_column, "time_column")
        _validate.name(self.key, "key")
        if (self.keep is None) == (self.cutoff is None):
            raise ConfigurationError("Retention needs exactly one of keep= or cutoff=")
        if self.keep is not None:
            set_(self, "keep", timedelta(seconds=_validate.duration(self.keep, "keep")))
        if self.cutoff is not None:
            aware(self.cutoff, "cutoff")
        set_(self, "batch_size", _validate.count(self.batch_size, "batch_size", maximum=1_000_000))
        normalise_batch_settings(self, f"retention:{self.table}")

    @property
    def job_name(self) -> str:
        return str(self.name)

    async def __call__(self, db: Any) -> JobResult:
        return await self.run(db)

    async def _plan(self, con: Any) -> tuple[str, str, str, datetime]:
        t = await table(con, self.table)
        tcol = t.column(self.time_column, "time_column", types=TIME_TYPES)
        kcol = t.column(self.key, "key")
        t.require_unique(self.key, "key")
        if not t.has_index([self.time_column, self.key]):
            raise MaintenanceRefused(
                f"{t.sql} has no btree index on ({self.time_column}, {self.key}); batches "
                "walk that order and without it each one would scan the table",
                fix=f"CREATE INDEX CONCURRENTLY ON {t.sql} "
                f"({ident(self.time_column)}, {ident(self.key)});",
            )
        if self.cutoff is not None:
            cutoff: datetime = self.cutoff
            if await con.fetchval("SELECT $1::timestamptz > now()", cutoff):
                raise MaintenanceRefused(
                    f"cutoff {cutoff.isoformat()} is in the future (by the server's clock); "
                    "it would delete rows that are not old yet"
                )
        else:
            cutoff = await con.fetchval("SELECT now() - $1::interval", self.keep)
        return t.sql, tcol.type, kcol.type, cutoff

    async def count(self, db: Any) -> int:
        """The dry run: how many rows a run would delete now (checks the input too)."""
        async with connection(db) as con:
            sql, ttype, _, cutoff = await self._plan(con)
            n: int = await con.fetchval(
                f"SELECT count(*) FROM {sql} WHERE {ident(self.time_column)} "
                f"< $1::timestamptz::{ttype}",
                cutoff,
            )
        return n

    async def run(self, db: Any) -> JobResult:
        """Delete, batch after batch, until no row older than the cutoff is left
        after the position (resumed from the checkpoint, if any)."""
        ckpt = Checkpoints(self.checkpoint_table)
        async with connection(db) as con:
            sql, ttype, ktype, cutoff = await self._plan(con)
            await ckpt.ensure(con)
            saved = await ckpt.load(con, self.job_name)
        position: list[str] | None = None
        # resume with the cutoff the interrupted run used (an explicit cutoff that
        # changed since starts over)
        if saved is not None and saved[0] is not None and self.cutoff in (None, saved[0]):
            cutoff, position = saved[0], saved[1]
        t, k = ident(self.time_column), ident(self.key)
        select = f"SELECT {k} AS k, {t} AS t FROM {sql} WHERE {t} < $1::timestamptz::{ttype}"
        tail = f"""
            ORDER BY {t}, {k} LIMIT $2
        ), gone AS (
            DELETE FROM {sql} AS x USING doomed
            WHERE x.{k} = doomed.k AND x.{t} < $1::timestamptz::{ttype}
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM gone) AS deleted,
               to_jsonb(last.t) #>> '{{}}' AS t, to_jsonb(last.k) #>> '{{}}' AS k
        FROM (SELECT t, k FROM doomed ORDER BY t DESC, k DESC LIMIT 1) AS last"""
        first = f"WITH doomed AS ({select}{tail}"
        after = (
            f"WITH doomed AS ({select} AND ({t}, {k}) > ($3::text::{ttype}, $4::text::{ktype})"
            f"{tail}"
        )
        batch_size = self.batch_size

        async def step(con: Any, pos: list[str] | None) -> tuple[int, list[str] | None]:
            if pos is None:
                row = await con.fetchrow(first, cutoff, batch_size)
            else:
                row = await con.fetchrow(after, cutoff, batch_size, pos[0], pos[1])
            if row is None:
                return 0, None
            return int(row["deleted"]), [row["t"], row["k"]]

        return await BatchLoop.of(self, ckpt, cutoff).run(db, step, position)

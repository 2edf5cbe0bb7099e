"""Partitions: range partitions made ahead of time, expired ones rolled up and dropped."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from scalekit import _validate
from scalekit._clock import Clock
from scalekit.errors import ConfigurationError, MaintenanceRefused
from scalekit.maintenance._db import (
    CHECKPOINT_TABLE,
    RETRY_SQLSTATES,
    TIME_TYPES,
    Checkpoints,
    Table,
    connection,
    ident,
    literal,
    log,
    normalise_batch_settings,
    set_local_timeouts,
    table,
)

__all__ = ["PartitionReport", "Partitions"]

Period = Literal["month", "day"]
_BOUND = re.compile(r"^FOR VALUES FROM \((.+)\) TO \((.+)\)$", re.S)
_LITERAL = re.compile(r"^'(\d{4}-\d{2}-\d{2})(?: (\d{2}:\d{2}:\d{2}(?:\.\d+)?))?(?:\+00)?'$")


@dataclass(frozen=True, slots=True)
class PartitionReport:
    """What a :class:`Partitions` run did and what it found wrong."""

    job: str
    #: partitions created by this run (schema-qualified names)
    created: tuple[str, ...] = ()
    #: partitions detached from the table by this run
    detached: tuple[str, ...] = ()
    #: partitions rolled up (when a rollup is set) by this run
    rolled_up: tuple[str, ...] = ()
    #: partitions dropped by this run
    dropped: tuple[str, ...] = ()
    #: rows in the default partition (0 when there is none)
    default_rows: int = 0
    #: health problems, one sentence each (rows in the default partition, a
    #: partition that could not be created, bounds that cannot be read)
    problems: tuple[str, ...] = ()

    @property
    def healthy(self) -> bool:
        return not self.problems


@dataclass(frozen=True, slots=True)
class _Part:
    sql: str
    lower: datetime | None  # None: MINVALUE or unreadable
    upper: datetime | None  # None: MAXVALUE or unreadable
    pending: bool  # DETACH CONCURRENTLY interrupted


def _parse(lit: str) -> datetime | None:
    m = _LITERAL.match(lit.strip())
    if m is None:
        return None
    return datetime.fromisoformat(m.group(1) + (" " + m.group(2) if m.group(2) else ""))


def _floor(when: datetime, period: Period) -> datetime:
    day = when.replace(hour=0, minute=0, second=0, microsecond=0)
    return day.replace(day=1) if period == "month" else day


def _shift(when: datetime, period: Period, n: int) -> datetime:
    if period == "day":
        return when + timedelta(days=n)
    years, month0 = divmod(when.month - 1 + n, 12)
    return when.replace(year=when.year + years, month=month0 + 1)


@dataclass(frozen=True, slots=True)
class Partitions:
    """Keep a table ``PARTITION BY RANGE`` on one time column in shape.

    Each run, on the server's clock (UTC; a ``timestamp without time zone`` column is
    taken as UTC):

    1. creates the partitions of the current ``period`` and the ``premake`` next ones
       that do not exist yet (``<table>_pYYYYMM`` or ``<table>_pYYYYMMDD``), unless
       rows in the default partition fall in the range: that is reported, since
       PostgreSQL refuses the partition until they are moved;
    2. with ``keep``, detaches each partition whose upper bound is older than
       ``keep`` (``CONCURRENTLY`` on PostgreSQL 14+ when the table has no default
       partition, which is the server's rule), runs ``rollup`` on it (an SQL
       statement in which ``{partition}`` stands for the detached table, e.g. an
       ``INSERT INTO daily_views SELECT ... FROM {partition} GROUP BY ...``) and
       drops it (``drop=False`` keeps it as a standalone table), the rollup and the
       drop in one transaction, so a partition is aggregated exactly once; an
       interrupted detach is finished by the next run;
    3. counts the rows in the default partition and reports them as a problem.
    """

    table: str
    _: KW_ONLY
    period: Period = "month"
    premake: int = 3
    keep: float | timedelta | None = None
    rollup: str | None = None
    drop: bool = True
    lock_timeout: float | timedelta = 2.0
    statement_timeout: float | timedelta = 300.0
    name: str | None = None
    checkpoint_table: str = CHECKPOINT_TABLE
    clock: Clock | Callable[[], float] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        _validate.name(self.table, "table")
        if self.period not in ("month", "day"):
            raise ConfigurationError(f"period must be 'month' or 'day', got {self.period!r}")
        object.__setattr__(
            self, "premake", _validate.count(self.premake, "premake", minimum=0, maximum=1000)
        )
        if self.keep is not None:
            object.__setattr__(
                self, "keep", timedelta(seconds=_validate.duration(self.keep, "keep"))
            )
        if self.rollup is not None and (
            not isinstance(self.rollup, str) or "{partition}" not in self.rollup
        ):
            raise ConfigurationError(
                "rollup must be an SQL statement containing {partition} (the detached "
                f"partition's name), got {self.rollup!r}"
            )
        if self.rollup is not None and self.keep is None:
            raise ConfigurationError("rollup= only applies to expired partitions: set keep=")
        if not isinstance(self.drop, bool):
            raise ConfigurationError(f"drop must be a bool, got {self.drop!r}")
        normalise_batch_settings(self, f"partitions:{self.table}", batched=False)

    @property
    def job_name(self) -> str:
        return str(self.name)

    async def __call__(self, db: Any) -> PartitionReport:
        return await self.run(db)

    # -- the catalog -------------------------------------------------------------
    async def _inspect(self, con: Any) -> tuple[Table, str, str]:
        t = await table(con, self.table)
        if t.kind != "p":
            raise MaintenanceRefused(
                f"{t.sql} is not a partitioned table",
                fix=f"-- create it as: CREATE TABLE ... PARTITION BY RANGE (<time column>); "
                f"then move the rows of {t.sql} into it",
            )
        row = await con.fetchrow(
            "SELECT p.partstrat::text AS strat, p.partnatts AS n, a.attname AS col "
            "FROM pg_partitioned_table p LEFT JOIN pg_attribute a "
            "ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0] "
            "WHERE p.partrelid = $1::int8::oid",
            t.oid,
        )
        if row["strat"] != "r" or row["n"] != 1 or row["col"] is None:
            raise MaintenanceRefused(
                f"{t.sql} must be PARTITION BY RANGE on one time column (it is not)"
            )
        col = t.column(row["col"], "partition key", types=TIME_TYPES)
        return t, col.name, col.type

    async def _partitions(self, con: Any, t: Table) -> tuple[list[_Part], str | None]:
        async with con.transaction():
            # bounds printed the way _parse reads them, whatever the session's settings
            await con.execute(
                "SELECT set_config('TimeZone', 'UTC', true), "
                "set_config('DateStyle', 'ISO, YMD', true)"
            )
            rows = await con.fetch(
                "SELECT format('%I.%I', n.nspname, c.relname) AS sql, "
                "pg_get_expr(c.relpartbound, c.oid) AS bound, "
                + (
                    "i.inhdetachpending AS pending "
                    if await self._server_version(con) >= 140000
                    else "false AS pending "
                )
                + "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE i.inhparent = $1::int8::oid ORDER BY c.relname",
                t.oid,
            )
        parts: list[_Part] = []
        default: str | None = None
        for r in rows:
            if r["bound"] == "DEFAULT":
                default = r["sql"]
                continue
            m = _BOUND.match(r["bound"] or "")
            lower = _parse(m.group(1)) if m else None
            upper = _parse(m.group(2)) if m else None
            parts.append(_Part(r["sql"], lower, upper, r["pending"]))
        return parts, default

    @staticmethod
    async def _server_version(con: Any) -> int:
        v: int = await con.fetchval("SELECT current_setting('server_version_num')::int")
        return v

    def _literal(self, when: datetime, coltype: str) -> str:
        if coltype == "date":
            return literal(f"{when:%Y-%m-%d}")
        text = f"{when:%Y-%m-%d %H:%M:%S}"
        return literal(text + "+00" if coltype == "timestamp with time zone" else text)

    # -- the run -------------------------------------------------------------------
    async def run(self, db: Any) -> PartitionReport:
        created: list[str] = []
        detached: list[str] = []
        rolled: list[str] = []
        dropped: list[str] = []
        problems: list[str] = []
        ckpt = Checkpoints(self.checkpoint_table)
        lock_t = _validate.duration(self.lock_timeout, "lock_timeout")
        stmt_t = _validate.duration(self.statement_timeout, "statement_timeout")
        async with connection(db) as con:
            t, col, coltype = await self._inspect(con)
            await ckpt.ensure(con)
            now: datetime = await con.fetchval("SELECT now() AT TIME ZONE 'UTC'")
            prefix = f"{self.job_name}:expire:"

            # 1. partitions expired by an earlier, interrupted run
            parts, default = await self._partitions(con, t)
            pending = await ckpt.jobs_like(con, prefix)
            for job, _pos in pending:
                part = job[len(prefix) :]
                await self._expire(
                    con, t, part, ckpt, job, detached, rolled, dropped, default=default
                )
            if pending:
                parts, default = await self._partitions(con, t)
            for p in parts:
                if p.lower is None and p.upper is None:
                    problems.append(f"cannot read the bounds of partition {p.sql}; left alone")

            # 2. future partitions
            start = _floor(now, self.period)
            for i in range(self.premake + 1):
                lo, hi = _shift(start, self.period, i), _shift(start, self.period, i + 1)
                if any(
                    (p.lower is None or p.lower < hi) and (p.upper is None or p.upper > lo)
                    for p in parts
                ):
                    continue
                suffix = f"{lo:%Y%m}" if self.period == "month" else f"{lo:%Y%m%d}"
                pname = f"{t.name}_p{suffix}"
                if len(pname.encode()) > 63:
                    problems.append(
                        f"partition name {pname!r} is longer than 63 bytes; rename {t.sql} "
                        "or create the partition by hand"
                    )
                    continue
                psql = f"{ident(t.schema)}.{ident(pname)}"
                lo_lit, hi_lit = self._literal(lo, coltype), self._literal(hi, coltype)
                if default is not None:
                    n: int = await con.fetchval(
                        f"SELECT count(*) FROM {default} WHERE {ident(col)} >= {lo_lit} "
                        f"AND {ident(col)} < {hi_lit}"
                    )
                    if n:
                        problems.append(
                            f"{n} row(s) in the default partition {default} fall in "
                            f"[{lo:%Y-%m-%d}, {hi:%Y-%m-%d}): partition {psql} cannot be "
                            "created until they are moved out"
                        )
                        continue
                try:
                    async with con.transaction():
                        await set_local_timeouts(con, lock_t, stmt_t)
                        await con.execute(
                            f"CREATE TABLE {psql} PARTITION OF {t.sql} "
                            f"FOR VALUES FROM ({lo_lit}) TO ({hi_lit})"
                        )
                except Exception as exc:
                    if getattr(exc, "sqlstate", None) not in RETRY_SQLSTATES:
                        raise
                    # a long transaction on the table holds a lock CREATE needs: say
                    # so, and go on with the rest of the run (the next one retries)
                    problems.append(f"partition {psql} not created this run: {exc}")
                    continue
                created.append(psql)
                log.info("%s: created %s", self.job_name, psql)

            # 3. expired partitions
            if self.keep is not None:
                assert isinstance(self.keep, timedelta)
                horizon = now - self.keep
                for p in parts:
                    if p.upper is not None and p.upper <= horizon:
                        job = f"{prefix}{p.sql}"
                        await ckpt.save(con, job, None, [p.sql])
                        await self._expire(
                            con, t, p.sql, ckpt, job, detached, rolled, dropped, default=default
                        )

            # 4. the default partition
            default_rows = 0
            if default is not None:
                row = await con.fetchrow(
                    f"SELECT count(*) AS n, min({ident(col)})::text AS lo, "
                    f"max({ident(col)})::text AS hi FROM {default}"
                )
                default_rows = int(row["n"])
                if default_rows:
                    problems.append(
                        f"{default_rows} row(s) in the default partition {default} (from "
                        f"{row['lo']} to {row['hi']}); rows there make the partition that "
                        "should hold them impossible to create: move them into real "
                        "partitions or fix what writes them"
                    )
        for problem in problems:
            log.warning("%s: %s", self.job_name, problem)
        return PartitionReport(
            job=self.job_name,
            created=tuple(created),
            detached=tuple(detached),
            rolled_up=tuple(rolled),
            dropped=tuple(dropped),
            default_rows=default_rows,
            problems=tuple(problems),
        )

    async def _expire(
        self,
        con: Any,
        t: Table,
        part_sql: str,
        ckpt: Checkpoints,
        job: str,
        detached: list[str],
        rolled: list[str],
        dropped: list[str],
        *,
        default: str | None = None,
    ) -> None:
        """Detach ``part_sql`` (if still attached), roll it up and drop it; the
        checkpoint row ``job`` (saved before) goes with the drop."""
        lock_t = _validate.duration(self.lock_timeout, "lock_timeout")
        stmt_t = _validate.duration(self.statement_timeout, "statement_timeout")
        state = await con.fetchrow(
            "SELECT to_regclass($1) IS NOT NULL AS exists, "
            "EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass($1) "
            "AND inhparent = $2::int8::oid) AS attached",
            part_sql,
            t.oid,
        )
        if not state["exists"]:
            await ckpt.clear(con, job)
            return
        if state["attached"]:
            version = await self._server_version(con)
            pending = version >= 140000 and await con.fetchval(
                "SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = to_regclass($1)",
                part_sql,
            )
            if pending:
                await con.execute(f"ALTER TABLE {t.sql} DETACH PARTITION {part_sql} FINALIZE")
            elif version >= 140000 and default is None and not con.is_in_transaction():
                # cannot run in a transaction block, so no SET LOCAL: its first phase
                # takes only SHARE UPDATE EXCLUSIVE, which writers do not wait for
                await con.execute(f"ALTER TABLE {t.sql} DETACH PARTITION {part_sql} CONCURRENTLY")
            else:
                async with con.transaction():
                    await set_local_timeouts(con, lock_t, stmt_t)
                    await con.execute(f"ALTER TABLE {t.sql} DETACH PARTITION {part_sql}")
            detached.append(part_sql)
            log.info("%s: detached %s", self.job_name, part_sql)
        async with con.transaction():
            await set_local_timeouts(con, lock_t, stmt_t)
            if self.rollup is not None:
                await con.execute(self.rollup.replace("{partition}", part_sql))
            if self.drop:
                await con.execute(f"DROP TABLE {part_sql}")
            await ckpt.clear(con, job)
        if self.rollup is not None:
            rolled.append(part_sql)
        if self.drop:
            dropped.append(part_sql)
            log.info("%s: dropped %s", self.job_name, part_sql)

"""What every maintenance job shares: connections, quoting, the catalog, checkpoints
and the batch loop.

Nothing here imports asyncpg: a job is handed a :class:`~scalekit.pools.PgPool`, an
``asyncpg.Pool`` or an ``asyncpg.Connection`` and only calls their methods. Every
identifier that reaches SQL is either quoted here (:func:`ident`) or printed by the
server itself (``format('%I.%I', ...)``); every value is a ``$n`` parameter. The only
literals written into SQL text are partition bounds, which DDL cannot take as
parameters; :func:`literal` quotes them.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from scalekit import _validate
from scalekit._clock import Clock, as_clock
from scalekit.errors import ConfigurationError, MaintenanceRefused
from scalekit.observability._metrics import default_registry as _metrics

log = logging.getLogger("scalekit.maintenance")

#: SQLSTATEs after which a batch is retried: lock_timeout, deadlock, serialization
RETRY_SQLSTATES = frozenset({"55P03", "40P01", "40001"})
#: column types a time column may have
TIME_TYPES = frozenset({"timestamp with time zone", "timestamp without time zone", "date"})


def ident(name: str) -> str:
    """``name`` as a quoted SQL identifier (``"a""b"`` for ``a"b``); NUL refused."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ConfigurationError(f"a column or table name must be a non-empty str, got {name!r}")
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """``text`` as a quoted SQL string literal (standard_conforming_strings)."""
    if "\x00" in text:
        raise ConfigurationError(f"a literal cannot contain NUL: {text!r}")
    return "'" + text.replace("'", "''") + "'"


def aware(value: object, what: str) -> datetime:
    """A timezone-aware ``datetime`` (a naive one is ambiguous and refused)."""
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ConfigurationError(f"{what} must be a timezone-aware datetime, got {value!r}")
    return value


def is_pool(db: object) -> bool:
    """A pool hands out connections (``acquire``); a connection does not."""
    return callable(getattr(db, "acquire", None))


@asynccontextmanager
async def connection(db: Any) -> AsyncIterator[Any]:
    """A connection from ``db``: acquired from a pool and given back, or ``db`` itself."""
    if is_pool(db):
        async with db.acquire() as con:
            yield con
    else:
        yield db


# -- the catalog -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str  # format_type(): valid SQL, printed by the server
    not_null: bool
    has_default: bool
    generated: bool


@dataclass(frozen=True, slots=True)
class Index:
    name: str
    columns: tuple[str | None, ...]  # key columns; None for an expression
    descending: tuple[bool, ...]
    unique: bool
    usable: bool  # a valid, non-partial btree index


@dataclass(frozen=True, slots=True)
class Table:
    oid: int
    sql: str  # schema-qualified, quoted by the server
    schema: str
    name: str
    kind: str  # pg_class.relkind
    columns: dict[str, Column] = field(default_factory=dict)
    indexes: tuple[Index, ...] = ()

    def column(self, name: str, what: str, *, types: frozenset[str] | None = None) -> Column:
        col = self.columns.get(name)
        if col is None:
            raise MaintenanceRefused(
                f"{self.sql} has no column {name!r} ({what}); its columns are "
                f"{', '.join(self.columns) or 'none'}"
            )
        if types is not None and col.type not in types:
            raise MaintenanceRefused(
                f"{what} {self.sql}.{ident(name)} is {col.type}; it must be one of "
                f"{', '.join(sorted(types))}"
            )
        return col

    def has_index(self, leading: Sequence[str], *, same_direction_from: int = 0) -> bool:
        """A usable btree index whose first key columns are ``leading`` (in order);
        the columns from ``same_direction_from`` on must all sort the same way, so
        one scan (forward or backward) serves ``ORDER BY`` them all ASC or DESC."""
        n = len(leading)
        for ix in self.indexes:
            if not ix.usable or tuple(ix.columns[:n]) != tuple(leading):
                continue
            if len(set(ix.descending[same_direction_from:n])) <= 1:
                return True
        return False

    def is_unique(self, column: str) -> bool:
        return any(ix.usable and ix.unique and ix.columns == (column,) for ix in self.indexes)

    def require_unique(self, column: str, what: str) -> None:
        if not self.is_unique(column):
            raise MaintenanceRefused(
                f"{what} {column!r} of {self.sql} is not unique (no primary key or unique "
                "index on it alone); batches address rows by it, so it must be",
                fix=f"CREATE UNIQUE INDEX CONCURRENTLY ON {self.sql} ({ident(column)});",
            )


_TABLE_SQL = """
SELECT c.oid::int8 AS oid, format('%I.%I', n.nspname, c.relname) AS sql,
       n.nspname AS schema, c.relname AS name, c.relkind::text AS kind
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = to_regclass($1)
"""
_COLUMNS_SQL = """
SELECT attname AS name, format_type(atttypid, atttypmod) AS type, attnotnull AS not_null,
       atthasdef AS has_default, attgenerated <> '' AS generated
FROM pg_attribute WHERE attrelid = $1::int8::oid AND attnum > 0 AND NOT attisdropped
ORDER BY attnum
"""
_INDEXES_SQL = """
SELECT ix.indexrelid::regclass::text AS name, ix.indisunique AS is_unique,
       ix.indisvalid AND ix.indpred IS NULL AND am.amname = 'btree' AS usable,
       ARRAY(SELECT a.attname FROM unnest(ix.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
             LEFT JOIN pg_attribute a ON a.attrelid = ix.indrelid AND a.attnum = k.attnum
             WHERE k.ord <= ix.indnkeyatts ORDER BY k.ord) AS columns,
       ARRAY(SELECT (o & 1) = 1 FROM unnest(ix.indoption::int2[]) WITH ORDINALITY AS k(o, ord)
             WHERE k.ord <= ix.indnkeyatts ORDER BY k.ord) AS descending
FROM pg_index ix JOIN pg_class c ON c.oid = ix.indexrelid JOIN pg_am am ON am.oid = c.relam
WHERE ix.indrelid = $1::int8::oid
"""


async def table(con: Any, name: str, what: str = "table", *, must_exist: bool = True) -> Table:
    """Look ``name`` up as PostgreSQL would (``schema.table``, ``"Quoted"`` names,
    the search_path): the name is parsed by the server's ``to_regclass``, never
    pasted into SQL."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ConfigurationError(f"{what} must be a non-empty table name, got {name!r}")
    try:
        row = await con.fetchrow(_TABLE_SQL, name)
    except Exception as exc:
        if getattr(exc, "sqlstate", None) != "42602":  # invalid_name
            raise
        raise MaintenanceRefused(
            f"{what} {name!r} is not a valid table name (quote unusual names: "
            "'schema.\"My Table\"')"
        ) from None
    if row is None:
        if not must_exist:
            return Table(oid=0, sql=name, schema="", name=name, kind="")
        raise MaintenanceRefused(f"{what} {name!r} does not exist (or is not visible)")
    cols = await con.fetch(_COLUMNS_SQL, row["oid"])
    ixs = await con.fetch(_INDEXES_SQL, row["oid"])
    return Table(
        oid=row["oid"],
        sql=row["sql"],
        schema=row["schema"],
        name=row["name"],
        kind=row["kind"],
        columns={
            c["name"]: Column(c["name"], c["type"], c["not_null"], c["has_default"], c["generated"])
            for c in cols
        },
        indexes=tuple(
            Index(
                name=i["name"],
                columns=tuple(i["columns"]),
                descending=tuple(i["descending"]),
                unique=i["is_unique"],
                usable=i["usable"],
            )
            for i in ixs
        ),
    )


# -- results ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class JobResult:
    """What one run of a batched job did."""

    #: the job's name (also its checkpoint's and its advisory lock's)
    job: str
    #: rows deleted or moved (or, in a dry run, that would be)
    rows: int
    #: batches committed in this run
    batches: int
    #: seconds the longest batch took (its transaction, retries excluded)
    longest_batch: float
    #: True when the job reached the end; False only for a dry run
    finished: bool
    #: the cutoff the run used, if the job has one
    cutoff: datetime | None = None
    dry_run: bool = False


# -- checkpoints -----------------------------------------------------------------
CHECKPOINT_TABLE = "scalekit_maintenance_checkpoint"


class Checkpoints:
    """One row per job in a small table: the cutoff the run uses and how far it got.

    The row is written in the same transaction as the batch it describes, so after
    a crash, a cancellation or a terminated connection it says exactly which
    batches committed.
    """

    def __init__(self, table_name: str) -> None:
        if not isinstance(table_name, str) or not table_name:
            raise ConfigurationError(f"checkpoint_table must be a table name, got {table_name!r}")
        self.name = table_name
        self.sql = ".".join(ident(part) for part in table_name.split(".", 1))

    async def ensure(self, con: Any) -> None:
        try:
            await con.execute(
                f"CREATE TABLE IF NOT EXISTS {self.sql} (job text PRIMARY KEY, "
                "cutoff timestamptz, position text[], "
                "updated_at timestamptz NOT NULL DEFAULT now())"
            )
        except Exception as exc:  # two workers creating it at once: one wins
            if getattr(exc, "sqlstate", None) not in {"23505", "42P07"}:
                raise

    async def load(self, con: Any, job: str) -> tuple[datetime | None, list[str] | None] | None:
        row = await con.fetchrow(f"SELECT cutoff, position FROM {self.sql} WHERE job = $1", job)
        return None if row is None else (row["cutoff"], row["position"])

    async def save(
        self, con: Any, job: str, cutoff: datetime | None, position: Sequence[str] | None
    ) -> None:
        await con.execute(
            f"INSERT INTO {self.sql} (job, cutoff, position) VALUES ($1, $2, $3) "
            "ON CONFLICT (job) DO UPDATE SET cutoff = excluded.cutoff, "
            "position = excluded.position, updated_at = now()",
            job,
            cutoff,
            None if position is None else list(position),
        )

    async def clear(self, con: Any, job: str) -> None:
        await con.execute(f"DELETE FROM {self.sql} WHERE job = $1", job)

    async def jobs_like(self, con: Any, prefix: str) -> list[tuple[str, list[str] | None]]:
        rows = await con.fetch(
            f"SELECT job, position FROM {self.sql} WHERE starts_with(job, $1) ORDER BY job",
            prefix,
        )
        return [(r["job"], r["position"]) for r in rows]


def normalise_batch_settings(job: Any, default_name: str, *, batched: bool = True) -> None:
    """Validate and normalise the settings every job has (in ``__post_init__`` of a
    frozen dataclass): timeouts, name, clock, and for batched jobs pause and retries."""
    set_ = object.__setattr__
    if batched:
        set_(job, "pause", _validate.duration(job.pause, "pause", allow_zero=True))
        set_(job, "retries", _validate.count(job.retries, "retries", minimum=0, maximum=100))
    set_(job, "lock_timeout", _validate.duration(job.lock_timeout, "lock_timeout"))
    set_(job, "statement_timeout", _validate.duration(job.statement_timeout, "statement_timeout"))
    set_(job, "name", _validate.name(default_name if job.name is None else job.name, "name"))
    set_(job, "clock", as_clock(job.clock))
    Checkpoints(job.checkpoint_table)  # refuses a bad name now, not at the first run


# -- timeouts and the batch loop -------------------------------------------------
async def set_local_timeouts(con: Any, lock_timeout: float, statement_timeout: float) -> None:
    """``SET LOCAL`` both timeouts (parameterised; ends with the transaction, so it
    works through PgBouncer in transaction mode)."""
    await con.execute(
        "SELECT set_config('lock_timeout', $1, true), set_config('statement_timeout', $2, true)",
        f"{max(1, round(lock_timeout * 1000))}ms",
        f"{max(1, round(statement_timeout * 1000))}ms",
    )


_JOB = ("job",)
_ROWS = _metrics.counter(
    "scalekit_maintenance_rows_total", "Rows deleted or moved, batch by batch.", labels=_JOB
)
_BATCHES = _metrics.counter("scalekit_maintenance_batches_total", "Batches committed.", labels=_JOB)
_BATCH_RETRIES = _metrics.counter(
    "scalekit_maintenance_batch_retries_total",
    "Batches retried after a lock timeout, a deadlock or a serialization failure.",
    labels=_JOB,
)
_BATCH_TIME = _metrics.histogram(
    "scalekit_maintenance_batch_seconds",
    "Seconds per batch (its transaction, retries excluded).",
    labels=_JOB,
    unit="seconds",
)


#: one batch: (connection inside its transaction, position) -> (rows, next position or None)
Step = Callable[[Any, "list[str] | None"], Awaitable[tuple[int, "list[str] | None"]]]


@dataclass(slots=True)
class BatchLoop:
    """Runs ``step`` batch after batch, each in its own short transaction with
    ``SET LOCAL`` timeouts, saving the checkpoint in that same transaction; retries a
    batch that hit a lock timeout, a deadlock or a serialization failure; pauses
    between batches on ``clock``."""

    job: str
    checkpoints: Checkpoints
    cutoff: datetime | None
    lock_timeout: float
    statement_timeout: float
    pause: float
    retries: int
    clock: Clock

    @classmethod
    def of(cls, job: Any, checkpoints: Checkpoints, cutoff: datetime | None) -> BatchLoop:
        """The loop for a job's (already validated) settings."""
        return cls(
            job=job.job_name,
            checkpoints=checkpoints,
            cutoff=cutoff,
            lock_timeout=_validate.duration(job.lock_timeout, "lock_timeout"),
            statement_timeout=_validate.duration(job.statement_timeout, "statement_timeout"),
            pause=_validate.duration(job.pause, "pause", allow_zero=True),
            retries=job.retries,
            clock=as_clock(job.clock),
        )

    async def run(self, db: Any, step: Step, position: list[str] | None) -> JobResult:
        rows = batches = 0
        longest = 0.0
        label = self.job[:128] or "job"
        count_rows, count_batch = _ROWS.labels(label), _BATCHES.labels(label)
        count_retry, batch_time = _BATCH_RETRIES.labels(label), _BATCH_TIME.labels(label)
        while True:
            attempt = 0
            while True:
                started = self.clock.now()
                try:
                    async with connection(db) as con, con.transaction():
                        await set_local_timeouts(con, self.lock_timeout, self.statement_timeout)
                        done, nxt = await step(con, position)
                        if nxt is None:
                            await self.checkpoints.clear(con, self.job)
                        else:
                            await self.checkpoints.save(con, self.job, self.cutoff, nxt)
                except Exception as exc:
                    if getattr(exc, "sqlstate", None) in RETRY_SQLSTATES and attempt < self.retries:
                        attempt += 1
                        count_retry.inc()
                        log.info("%s: batch retried (%s), attempt %d", self.job, exc, attempt)
                        await self.clock.asleep(self.pause * attempt)
                        continue
                    raise
                break
            took = self.clock.now() - started
            longest = max(longest, took)
            rows += done
            if done:
                count_rows.add(done)
            batch_time.observe(took)
            if nxt is not None or done:
                count_batch.inc()  # as JobResult.batches: a final empty batch is not one
            if nxt is None:
                if done:
                    batches += 1
                log.info("%s: finished, %d row(s) in %d batch(es)", self.job, rows, batches)
                return JobResult(self.job, rows, batches, longest, True, self.cutoff)
            batches += 1
            position = nxt
            log.debug("%s: batch %d, %d row(s) in %.3fs", self.job, batches, done, took)
            if self.pause:
                await self.clock.asleep(self.pause)

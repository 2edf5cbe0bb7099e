"""The demo's PostgreSQL: the embedded server, its databases, and what the server counted.

Every count the demo reports about the database is read from PostgreSQL's own
statistics views, never from a counter in the demo or the services:

* queries: ``pg_stat_statements`` (calls of the services' statements; the pool's
  housekeeping and the demo's own reads are left out) when the server loads it
  (``shared_preload_libraries``), else ``pg_stat_database``'s ``xact_commit +
  xact_rollback`` (one per statement outside a transaction block, one per explicit
  transaction; each new connection and the pool's reset at every release count too);
* rows read: ``pg_stat_user_tables.seq_tup_read`` plus ``pg_stat_user_indexes.idx_tup_read``
  (rows the server read from the services' tables by sequential scans and index
  entries it read, summed over every table and index of the database);
* rows written: ``n_tup_ins + n_tup_upd + n_tup_del`` of the same tables.

Each measured phase runs in a database of its own: the seeded template, and a copy of
it made before any phase ran, so the two phases start from the same data and the
server keeps their counts apart.
A backend reports its counts to the statistics system when it exits at the latest, so
a snapshot first waits until no backend is connected to the phase's database.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import tempfile
import time
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "Counts",
    "DemoDatabases",
    "EmbeddedPostgres",
    "HOUSEKEEPING",
    "Snapshot",
    "with_database",
]

#: statements that are not the services' own work: the pool's reset at every release,
#: asyncpg's type introspection, pings, transaction control, and the demo's reads of
#: the statistics views
HOUSEKEEPING = re.compile(
    r"pg_advisory_unlock_all|pg_catalog\.|pg_stat"
    r"|^\s*(close|unlisten|reset|discard|show|set|begin|start|commit|rollback|end)\b"
    r"|^\s*select \$1\s*;?\s*$",
    re.IGNORECASE,
)


def with_database(dsn: str, name: str) -> str:
    """``dsn`` pointing at database ``name`` (its host, user and options kept)."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


def database_of(dsn: str) -> str:
    name = urlsplit(dsn).path.lstrip("/")
    return name or "postgres"


def _short_temp() -> str | None:
    """The temporary directory, or /tmp where that path is too long for the server's
    unix socket (<dir>/scalekit-demo-pg-XXXXXXXX/pgdata/.s.PGSQL.5432 must fit in
    about 100 bytes; macOS' TMPDIR alone is ~50)."""
    base = tempfile.gettempdir()
    if len(base) > 48 and os.name == "posix" and os.path.isdir("/tmp"):
        return "/tmp"
    return None


class EmbeddedPostgres:
    """A PostgreSQL started from the ``pgserver`` wheel in a temporary directory.

    ``start()`` returns its DSN (a unix socket, no port); ``close()`` stops it and
    deletes its data, and is safe to call twice or after a failed start.
    """

    def __init__(self) -> None:
        self._dir: Path | None = None
        self._server: Any = None
        self.version = ""

    def start(self) -> str:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (pgserver keeps a lock there)
            warnings.simplefilter("ignore")
            from pgserver.postgres_server import get_server

            self._dir = Path(tempfile.mkdtemp(prefix="scalekit-demo-pg-", dir=_short_temp()))
            self._server = get_server(self._dir / "pgdata", cleanup_mode="delete")
        info: Any = self._server.get_postmaster_info()
        if info.socket_dir is not None:
            return f"postgresql://postgres@/postgres?host={info.socket_dir}&port={info.port}"
        return str(self._server.get_uri())

    async def tune(self, dsn: str) -> None:
        """Throw-away data needs no durability: no fsync, no waiting for WAL flushes
        (the seeding and the template copies run several times faster)."""
        import asyncpg

        conn = await asyncpg.connect(dsn)
        try:
            for setting in ("fsync", "synchronous_commit", "full_page_writes"):
                await conn.execute(f"ALTER SYSTEM SET {setting} = off")
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                server.cleanup()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


@dataclass(frozen=True, slots=True)
class Counts:
    """What PostgreSQL counted for one database between two snapshots."""

    queries: int
    rows_read: int
    rows_written: int

    def __sub__(self, other: Counts) -> Counts:
        return Counts(
            self.queries - other.queries,
            self.rows_read - other.rows_read,
            self.rows_written - other.rows_written,
        )

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.queries + other.queries,
            self.rows_read + other.rows_read,
            self.rows_written + other.rows_written,
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The counters of a database at one quiet moment.

    ``queries_before`` is the query count before the snapshot's own reading connection
    opened, ``queries_after`` once it had gone: a window between two snapshots runs
    from ``first.queries_after`` to ``second.queries_before``, so the demo's reads are
    never in it. ``tables`` holds each table's ``(rows read, rows written)`` by its
    OID: a table dropped in the window (a partition the maintenance job removed)
    keeps what it had counted by the earlier snapshot instead of taking it out of the
    sum; what it counted after that is lost with it.
    """

    queries_before: int
    queries_after: int
    tables: dict[int, tuple[int, int]]

    def since(self, earlier: Snapshot) -> Counts:
        read = written = 0
        for relid, (r, w) in self.tables.items():
            r0, w0 = earlier.tables.get(relid, (0, 0))
            read += r - r0
            written += w - w0
        return Counts(self.queries_before - earlier.queries_after, read, written)


_TABLES_SQL = """
SELECT t.relid, t.seq_tup_read + coalesce(i.idx_tup_read, 0) AS read,
       t.n_tup_ins + t.n_tup_upd + t.n_tup_del AS written
FROM pg_stat_user_tables t
LEFT JOIN (SELECT relid, sum(idx_tup_read) AS idx_tup_read
           FROM pg_stat_user_indexes GROUP BY relid) i USING (relid)
"""

_STATEMENTS_SQL = """
SELECT query, calls
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


class DemoDatabases:
    """The demo's databases on one server: a seeded template and a clone per phase.

    ``admin_dsn`` is a database the demo may connect to for ``CREATE DATABASE`` and for
    reading ``pg_stat_database`` (it never writes there). Every database this creates
    is named ``scalekit_demo_<random>_<what>`` and dropped by :meth:`drop_all`.
    """

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self.prefix = f"scalekit_demo_{secrets.token_hex(4)}"
        self._admin: Any = None
        self._created: list[str] = []
        #: "pg_stat_statements" or "pg_stat_database", decided by :meth:`open`
        self.query_source = "pg_stat_database"
        self.server_version = ""

    async def open(self) -> None:
        import asyncpg

        self._admin = await asyncpg.connect(self.admin_dsn)
        self.server_version = str(await self._admin.fetchval("SHOW server_version"))
        preload = str(await self._admin.fetchval("SHOW shared_preload_libraries"))
        if "pg_stat_statements" in preload:
            self.query_source = "pg_stat_statements"

    async def close(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            await admin.close()

    def dsn(self, name: str) -> str:
        return with_database(self.admin_dsn, name)

    async def create(self, what: str, *, template: str | None = None) -> str:
        """Create ``<prefix>_<what>`` (a copy of ``template`` if given); its name."""
        name = f"{self.prefix}_{what}"
        self._created.append(name)
        if template is None:
            await self._admin.execute(f'CREATE DATABASE "{name}"')
        else:
            await self.wait_idle(template)
            await self._admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return name

    async def drop_all(self) -> None:
        while self._created:
            name = self._created.pop()
            with contextlib.suppress(Exception):
                await self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    async def prepare_template(self, name: str) -> None:
        """After seeding: fresh planner statistics, no autovacuum in the measured
        windows (its scans are not the services' work), and pg_stat_statements
        installed when the server loads it."""
        import asyncpg

        conn = await asyncpg.connect(self.dsn(name))
        try:
            tables = await conn.fetch(
                "SELECT format('%I.%I', n.nspname, c.relname) AS t FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r'"
                " AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
                " AND n.nspname NOT LIKE 'pg_toast%'"
            )
            for row in tables:
                await conn.execute(f"ALTER TABLE {row['t']} SET (autovacuum_enabled = false)")
            await conn.execute("ANALYZE")
            if self.query_source == "pg_stat_statements":
                try:
                    await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                except asyncpg.PostgresError:
                    self.query_source = "pg_stat_database"
        finally:
            await conn.close()

    async def wait_idle(self, name: str, *, timeout: float = 15.0) -> None:
        """Wait until no backend is connected to database ``name``: each one that left
        has reported its counts by then."""
        deadline = time.monotonic() + timeout
        while True:
            await self._admin.execute("SELECT pg_stat_clear_snapshot()")
            busy = await self._admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", name
            )
            if not busy:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"connections to {name} did not close within {timeout:.0f}s")
            await asyncio.sleep(0.02)

    async def _transactions(self, name: str) -> int:
        await self._admin.execute("SELECT pg_stat_clear_snapshot()")
        value = await self._admin.fetchval(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1", name
        )
        return int(value or 0)

    async def snapshot(self, name: str) -> Snapshot:
        """The counters of database ``name`` once every service connection has gone."""
        import asyncpg

        await self.wait_idle(name)
        xacts_before = await self._transactions(name)
        conn = await asyncpg.connect(self.dsn(name))
        try:
            rows = await conn.fetch(_TABLES_SQL)
            statements = None
            if self.query_source == "pg_stat_statements":
                statements = sum(
                    int(r["calls"])
                    for r in await conn.fetch(_STATEMENTS_SQL)
                    if not HOUSEKEEPING.search(r["query"])
                )
        finally:
            await conn.close()
        await self.wait_idle(name)
        xacts_after = await self._transactions(name)
        tables = {int(r["relid"]): (int(r["read"]), int(r["written"])) for r in rows}
        if statements is not None:
            # the demo's reads are filtered out of pg_stat_statements by their text
            return Snapshot(statements, statements, tables)
        return Snapshot(xacts_before, xacts_after, tables)


@contextlib.asynccontextmanager
async def demo_databases(admin_dsn: str) -> AsyncIterator[DemoDatabases]:
    """:class:`DemoDatabases` on ``admin_dsn``, every database it made dropped at the end."""
    dbs = DemoDatabases(admin_dsn)
    await dbs.open()
    try:
        yield dbs
    finally:
        try:
            await dbs.drop_all()
        finally:
            await dbs.close()

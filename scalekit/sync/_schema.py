"""Names and DDL of change tracking: the stamp column, the tombstone table, triggers.

For a table ``t`` with key ``k`` (in schema ``s``, or on the search_path):

- ``t._sk_xid xid8``: stamped with ``pg_current_xact_id()`` by a BEFORE INSERT OR
  UPDATE trigger, indexed with the key as ``(_sk_xid, k)``;
- ``_sk_tomb_<hash>``: one row per deletion (key, the ``keep`` columns, the deleting
  transaction's xid, the time), written by an AFTER DELETE OR UPDATE trigger; an
  UPDATE writes one too when it changes the key or a ``keep`` column, so a filtered
  feed learns that a row moved out of its filter;
- ``_sk_change_tracking``: one row per tracked table (key, keep columns, the
  tombstone floor after purges).

Every identifier is quoted; names derived from the table go through a hash so
they stay short and plain whatever the table is called.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from scalekit.errors import ConfigurationError
from scalekit.pagination._sql import quote_ident

XID = "_sk_xid"
DELETED_AT = "_sk_deleted_at"
META = "_sk_change_tracking"


@dataclass(frozen=True, slots=True)
class Names:
    """Quoted names of everything change tracking creates for one table."""

    schema: str | None
    table: str
    key: str

    @property
    def label(self) -> str:
        return self.table if self.schema is None else f"{self.schema}.{self.table}"

    def _q(self, name: str) -> str:
        q = quote_ident(name)
        return q if self.schema is None else f"{quote_ident(self.schema, 'schema')}.{q}"

    def _derived(self, prefix: str) -> str:
        h = hashlib.sha256(f"{self.table}".encode("utf-8", "surrogatepass")).hexdigest()[:16]
        return f"{prefix}_{h}"

    @property
    def qtable(self) -> str:
        return self._q(self.table)

    @property
    def qkey(self) -> str:
        return quote_ident(self.key, "key")

    @property
    def qtomb(self) -> str:
        return self._q(self._derived("_sk_tomb"))

    @property
    def qmeta(self) -> str:
        return self._q(META)

    @property
    def stamp_fn(self) -> str:
        return self._q(self._derived("_sk_stamp"))

    @property
    def tomb_fn(self) -> str:
        return self._q(self._derived("_sk_tombstone"))

    @property
    def truncate_fn(self) -> str:
        return self._q(self._derived("_sk_truncate"))

    @property
    def xid_index(self) -> str:
        return quote_ident(self._derived("_sk_xid_idx"))

    @property
    def tomb_index(self) -> str:
        return quote_ident(self._derived("_sk_tomb_xid_idx"))

    @property
    def tomb_age_index(self) -> str:
        return quote_ident(self._derived("_sk_tomb_age_idx"))


def names(table: object, key: object, schema: object) -> Names:
    quote_ident(table, "table")
    quote_ident(key, "key")
    if schema is not None:
        quote_ident(schema, "schema")
    assert isinstance(table, str) and isinstance(key, str)
    assert schema is None or isinstance(schema, str)
    if key in (XID, DELETED_AT):
        raise ConfigurationError(f"key {key!r} is a column change tracking adds")
    return Names(schema, table, key)


def check_keep(keep: Iterable[str], key: str) -> tuple[str, ...]:
    columns = tuple(keep)
    for column in columns:
        quote_ident(column, "keep column")
        if column in (key, XID, DELETED_AT):
            raise ConfigurationError(
                f"keep column {column!r}: the key and scalekit's own columns are kept already"
            )
    if len(set(columns)) != len(columns):
        raise ConfigurationError(f"keep lists a column twice: {columns!r}")
    return columns


def dollar_quote(text: str) -> str:
    """``text`` as a dollar-quoted literal whose tag does not occur in it (a function
    body quoting a hostile identifier cannot end the literal early)."""
    i = 0
    while f"$sk{i}$" in text:
        i += 1
    return f"$sk{i}${text}$sk{i}$"


def install_sql(n: Names, types: Sequence[tuple[str, str]]) -> list[str]:
    """DDL for ``n``; ``types`` are ``(column, format_type)`` of the key then the kept
    columns, as the server reported them."""
    key_and_keep = [quote_ident(c) for c, _ in types]
    old = ", ".join(f"OLD.{c}" for c in key_and_keep)
    new = ", ".join(f"NEW.{c}" for c in key_and_keep)
    tomb_columns = ", ".join(f"{quote_ident(c)} {t}" for c, t in types)
    return [
        f"CREATE TABLE IF NOT EXISTS {n.qmeta} (tbl text PRIMARY KEY, key text NOT NULL, "
        "keep text[] NOT NULL, floor xid8, installed_at timestamptz NOT NULL DEFAULT now())",
        f"ALTER TABLE {n.qtable} ADD COLUMN IF NOT EXISTS {XID} xid8 NOT NULL "
        "DEFAULT pg_current_xact_id()",
        f"CREATE INDEX IF NOT EXISTS {n.xid_index} ON {n.qtable} ({XID}, {n.qkey})",
        f"CREATE TABLE IF NOT EXISTS {n.qtomb} ({tomb_columns}, {XID} xid8 NOT NULL, "
        f"{DELETED_AT} timestamptz NOT NULL DEFAULT clock_timestamp())",
        f"CREATE INDEX IF NOT EXISTS {n.tomb_index} ON {n.qtomb} ({XID}, {n.qkey})",
        f"CREATE INDEX IF NOT EXISTS {n.tomb_age_index} ON {n.qtomb} ({DELETED_AT})",
        f"CREATE OR REPLACE FUNCTION {n.stamp_fn}() RETURNS trigger LANGUAGE plpgsql AS "
        + dollar_quote(f"""
BEGIN
    NEW.{XID} := pg_current_xact_id();
    RETURN NEW;
END"""),
        f"CREATE OR REPLACE FUNCTION {n.tomb_fn}() RETURNS trigger LANGUAGE plpgsql AS "
        + dollar_quote(f"""
BEGIN
    IF TG_OP = 'DELETE' OR ({old}) IS DISTINCT FROM ({new}) THEN
        INSERT INTO {n.qtomb} ({", ".join(key_and_keep)}, {XID})
        VALUES ({old}, pg_current_xact_id());
    END IF;
    RETURN NULL;
END"""),
        # TRUNCATE fires no row trigger: raise the floor instead, so every cursor
        # minted before it gets MustRefetch rather than a copy that keeps the rows
        f"CREATE OR REPLACE FUNCTION {n.truncate_fn}() RETURNS trigger LANGUAGE plpgsql AS "
        + dollar_quote(f"""
BEGIN
    UPDATE {n.qmeta} SET floor = GREATEST(floor, pg_current_xact_id())
    WHERE tbl = {dollar_quote(n.label)};
    RETURN NULL;
END"""),
        f"DROP TRIGGER IF EXISTS _sk_stamp ON {n.qtable}",
        f"CREATE TRIGGER _sk_stamp BEFORE INSERT OR UPDATE ON {n.qtable} "
        f"FOR EACH ROW EXECUTE FUNCTION {n.stamp_fn}()",
        f"DROP TRIGGER IF EXISTS _sk_tombstone ON {n.qtable}",
        f"CREATE TRIGGER _sk_tombstone AFTER DELETE OR UPDATE ON {n.qtable} "
        f"FOR EACH ROW EXECUTE FUNCTION {n.tomb_fn}()",
        f"DROP TRIGGER IF EXISTS _sk_truncate ON {n.qtable}",
        f"CREATE TRIGGER _sk_truncate AFTER TRUNCATE ON {n.qtable} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {n.truncate_fn}()",
    ]


def uninstall_sql(n: Names) -> list[str]:
    return [
        f"DROP TRIGGER IF EXISTS _sk_stamp ON {n.qtable}",
        f"DROP TRIGGER IF EXISTS _sk_tombstone ON {n.qtable}",
        f"DROP TRIGGER IF EXISTS _sk_truncate ON {n.qtable}",
        f"DROP FUNCTION IF EXISTS {n.stamp_fn}()",
        f"DROP FUNCTION IF EXISTS {n.tomb_fn}()",
        f"DROP FUNCTION IF EXISTS {n.truncate_fn}()",
        f"DROP TABLE IF EXISTS {n.qtomb}",
        f"ALTER TABLE {n.qtable} DROP COLUMN IF EXISTS {XID}",
    ]

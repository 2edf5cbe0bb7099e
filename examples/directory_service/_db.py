"""The directory's tables: install and seed (one school of 50,000 members, a few small)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SCHEMA = Path(__file__).with_name("schema.sql")

#: the school the demo searches, and its size
BIG_SCHOOL = 1
BIG_SCHOOL_MEMBERS = 50_000
#: a few small schools beside it (their rows share the indexes, not the answers)
SMALL_SCHOOLS = {2: 400, 3: 250, 4: 250, 5: 120, 6: 60}

_FIRST = [
    "Ada",
    "Ben",
    "Cleo",
    "Dan",
    "Eva",
    "Finn",
    "Gia",
    "Hugo",
    "Ines",
    "Jon",
    "Kai",
    "Lea",
    "Max",
    "Nia",
    "Omar",
    "Pia",
    "Quinn",
    "Rosa",
    "Sam",
    "Tara",
    "Uma",
    "Vic",
    "Wen",
    "Xena",
    "Yuri",
    "Zoe",
    "Alba",
    "Bruno",
    "Carla",
    "Dario",
    "Elif",
    "Farid",
    "Greta",
    "Hana",
    "Ivo",
    "Jana",
    "Karl",
    "Lina",
    "Milo",
    "Nora",
]
_LAST = [
    "Abbott",
    "Baker",
    "Castro",
    "Dubois",
    "Evans",
    "Fischer",
    "Garcia",
    "Hansen",
    "Ito",
    "Jensen",
    "Kowalski",
    "Larsen",
    "Moreau",
    "Nakamura",
    "Olsen",
    "Petrov",
    "Quispe",
    "Rossi",
    "Schmidt",
    "Tanaka",
    "Urban",
    "Vargas",
    "Weber",
    "Xu",
    "Yilmaz",
    "Zimmer",
    "Almeida",
    "Bianchi",
    "Costa",
    "Duarte",
    "Eriksen",
    "Fontaine",
    "Gomez",
    "Horvat",
    "Ivanova",
    "Jovanovic",
    "Kim",
    "Lopez",
    "Meyer",
    "Novak",
]

_SEED = """
WITH draws AS (
    SELECT s.id AS school_id, g, random() AS r1, random() AS r2, random() AS r3, random() AS r4
    FROM unnest($1::bigint[], $2::int[]) AS s(id, n)
    CROSS JOIN LATERAL generate_series(1, s.n) AS g
    ORDER BY s.id, g
), named AS (
    SELECT d.*,
           ($3::text[])[1 + floor(d.r1 * cardinality($3::text[]))::int] AS first,
           ($4::text[])[1 + floor(d.r2 * cardinality($4::text[]))::int] AS last
    FROM draws AS d
)
INSERT INTO members (school_id, name, role, grade, email)
SELECT school_id,
       last || ', ' || first,
       CASE WHEN r3 < 0.85 THEN 'student' WHEN r3 < 0.93 THEN 'parent'
            WHEN r3 < 0.98 THEN 'teacher' ELSE 'staff' END,
       CASE WHEN r3 < 0.85 THEN 1 + floor(r4 * 12)::int END,
       lower(first || '.' || last || '.' || g) || '@school' || school_id || '.example'
FROM named
ORDER BY school_id, g
"""


async def install(conn: Any) -> None:
    """The directory's tables and indexes (idempotent)."""
    await conn.execute(SCHEMA.read_text())


async def seed(conn: Any, *, users: int, seed: int) -> None:
    """School ``BIG_SCHOOL`` with ``BIG_SCHOOL_MEMBERS`` members and the
    ``SMALL_SCHOOLS``: names from a small pool (so many members share a name, and
    the id decides their order), 85 % students in grades 1-12, parents, teachers and
    staff. Replaces earlier directory data; deterministic for ``seed``. ``users``
    is not used: members are not the shared users."""
    sizes = {BIG_SCHOOL: BIG_SCHOOL_MEMBERS, **SMALL_SCHOOLS}
    async with conn.transaction():
        await conn.execute("TRUNCATE members, schools RESTART IDENTITY")
        await conn.execute(
            "INSERT INTO schools (id, name) "
            "SELECT id, 'School ' || id FROM unnest($1::bigint[]) AS id",
            list(sizes),
        )
        await conn.execute("SELECT setseed($1)", (seed % 1000) / 1000.0)
        await conn.execute(_SEED, list(sizes), list(sizes.values()), _FIRST, _LAST)
    await conn.execute("ANALYZE members")
    await conn.execute("ANALYZE schools")

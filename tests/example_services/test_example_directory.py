"""directory_service on the suite's real PostgreSQL: filtered keyset search in a school
of 50,000 members checked against a brute-force answer, cursors, what a deep page
reads (keyset vs OFFSET), and the primitives=False baseline."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from examples import directory_service as directory
from examples.common import ServiceConfig, apply_schema

pytestmark = pytest.mark.postgres

BIG = directory.BIG_SCHOOL
#: members with awkward names, added to a small school: code points past Latin-1,
#: the largest code point, LIKE's wildcards taken literally
ODD_NAMES = [
    "Ö, Ärger",
    "Öz, Ali",
    "\U0010ffff",
    "a\U0010ffffb",
    "a\U0010ffff",
    "%lit",
    "_under",
    "Zz\ud7ffz",
    "Zz\ue000",
]
ODD_SCHOOL = 6


def _dsn_for(dsn: str, name: str) -> str:
    base, _, query = dsn.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


@pytest.fixture(scope="module")
def directory_dsn(postgres_dsn: str) -> Iterator[str]:
    """One database for the module, seeded once (the tests only read it)."""
    name = f"exdir_{uuid.uuid4().hex[:12]}"
    dsn = _dsn_for(postgres_dsn, name)

    async def create() -> None:
        admin = await asyncpg.connect(postgres_dsn)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        conn = await asyncpg.connect(dsn)
        try:
            await apply_schema(conn)
            await directory.install(conn)
            await directory.install(conn)  # idempotent
            await directory.seed(conn, users=0, seed=11)
            await conn.executemany(
                "INSERT INTO members (school_id, name, role, email) VALUES ($1, $2, 'staff', 'x')",
                [(ODD_SCHOOL, n) for n in ODD_NAMES],
            )
        finally:
            await conn.close()

    async def drop() -> None:
        admin = await asyncpg.connect(postgres_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    asyncio.run(create())
    try:
        yield dsn
    finally:
        asyncio.run(drop())


@contextlib.asynccontextmanager
async def serve(dsn: str, primitives: bool = True, **kw: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = directory.create_app(ServiceConfig(database_url=dsn, primitives=primitives, **kw))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            yield client


async def walk(client: httpx.AsyncClient, school: int, limit: int, **filters: Any) -> list[int]:
    ids: list[int] = []
    cursor: str | None = None
    for _ in range(1000):
        params: dict[str, Any] = {"limit": limit, **filters}
        if cursor is not None:
            params["cursor"] = cursor
        response = await client.get(f"/schools/{school}/members", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["items"]) <= limit
        ids += [m["id"] for m in body["items"]]
        cursor = body["next"]
        if cursor is None:
            return ids
    raise AssertionError("the listing never ended")


async def brute_force(dsn: str, school: int, **filters: Any) -> list[int]:
    """The answer computed in Python from every member of the school."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT id, name, role, grade FROM members WHERE school_id = $1", school
        )
    finally:
        await conn.close()
    kept = [
        r
        for r in rows
        if ("role" not in filters or r["role"] == filters["role"])
        and ("grade" not in filters or r["grade"] == filters["grade"])
        and r["name"].startswith(filters.get("prefix", ""))
    ]
    kept.sort(key=lambda r: (r["name"], r["id"]))  # code point order = "C" collation
    return [r["id"] for r in kept]


SEARCHES: list[tuple[int, int, dict[str, Any]]] = [
    (BIG, 997, {}),
    (BIG, 83, {"role": "teacher"}),
    (BIG, 211, {"grade": 7}),
    (BIG, 31, {"role": "student", "grade": 3, "prefix": "K"}),
    (BIG, 7, {"prefix": "Kowalski, A"}),
    (BIG, 50, {"role": "parent", "prefix": "M"}),
    (BIG, 50, {"prefix": "Zz"}),
    (BIG, 10, {"role": "staff", "grade": 4}),
    (2, 13, {}),
    (ODD_SCHOOL, 2, {}),
    (ODD_SCHOOL, 1, {"prefix": "Ö"}),
    (ODD_SCHOOL, 1, {"prefix": "\U0010ffff"}),
    (ODD_SCHOOL, 1, {"prefix": "a\U0010ffff"}),
    (ODD_SCHOOL, 1, {"prefix": "%"}),
    (ODD_SCHOOL, 1, {"prefix": "_"}),
    (ODD_SCHOOL, 1, {"prefix": "Zz\ud7ff"}),
    (999, 5, {}),
]


@pytest.mark.parametrize("primitives", [True, False], ids=["keyset", "offset"])
async def test_filtered_pages_match_a_brute_force_answer(
    directory_dsn: str, primitives: bool
) -> None:
    async with serve(directory_dsn, primitives) as client:
        for school, limit, filters in SEARCHES:
            expected = await brute_force(directory_dsn, school, **filters)
            got = await walk(client, school, limit, **filters)
            assert got == expected, (school, filters)
    assert len(await brute_force(directory_dsn, BIG)) == directory.BIG_SCHOOL_MEMBERS


async def test_both_modes_serve_the_same_members(directory_dsn: str) -> None:
    pages: dict[bool, Any] = {}
    for primitives in (True, False):
        async with serve(directory_dsn, primitives) as client:
            params = {"role": "student", "grade": 9, "limit": 40}
            first = (await client.get(f"/schools/{BIG}/members", params=params)).json()
            second = await client.get(
                f"/schools/{BIG}/members", params={**params, "cursor": first["next"]}
            )
            pages[primitives] = [first["items"], second.json()["items"]]
    assert pages[True] == pages[False]
    assert all(m["grade"] == 9 and m["role"] == "student" for m in pages[True][1])


async def test_tampered_or_foreign_cursor_is_a_400(directory_dsn: str) -> None:
    url = f"/schools/{BIG}/members"
    async with serve(directory_dsn) as client:
        teachers = (await client.get(url, params={"role": "teacher", "limit": 3})).json()["next"]
        assert teachers
        ok = await client.get(url, params={"role": "teacher", "cursor": teachers})
        assert ok.status_code == 200
        flipped = teachers[:12] + ("A" if teachers[12] != "A" else "B") + teachers[13:]
        for params in (
            {"role": "teacher", "cursor": flipped},
            {"role": "student", "cursor": teachers},  # another filter
            {"cursor": teachers},  # no filter
            {"role": "teacher", "cursor": teachers[:-2]},
        ):
            response = await client.get(url, params=params)
            assert response.status_code == 400, params
        other = await client.get(
            "/schools/2/members", params={"role": "teacher", "cursor": teachers}
        )
        assert other.status_code == 400  # another school
    async with serve(directory_dsn, cursor_secret="a-different-secret-0123456789") as client:
        response = await client.get(url, params={"role": "teacher", "cursor": teachers})
        assert response.status_code == 400
    async with serve(directory_dsn, primitives=False) as client:
        for token in ("x", "-1", "1.5"):
            assert (await client.get(url, params={"cursor": token})).status_code == 400


async def test_hostile_input_is_refused_before_the_database(directory_dsn: str) -> None:
    url = f"/schools/{BIG}/members"
    async with serve(directory_dsn) as client:
        for params in (
            {"prefix": "a\x00b"},
            {"prefix": "x" * 101},
            {"grade": 13},
            {"grade": "nan"},
            {"role": "admin"},
            {"limit": 0},
            {"limit": 1001},
        ):
            assert (await client.get(url, params=params)).status_code == 422, params
        for school in (0, -1, 2**64):
            assert (await client.get(f"/schools/{school}/members")).status_code == 422
        assert (await client.get("/health/live")).status_code == 200
        schools = (await client.get("/schools")).json()
        assert [s["id"] for s in schools] == [1, 2, 3, 4, 5, 6]


async def _cursor_at(client: httpx.AsyncClient, depth: int, **filters: Any) -> str:
    cursor: str | None = None
    seen = 0
    while seen < depth:
        params = {"limit": min(1000, depth - seen), **filters}
        if cursor is not None:
            params["cursor"] = cursor
        body = (await client.get(f"/schools/{BIG}/members", params=params)).json()
        seen += len(body["items"])
        cursor = body["next"]
        assert cursor is not None
    assert cursor is not None
    return cursor


async def test_keyset_reads_one_page_at_any_depth_offset_reads_all_before(
    directory_dsn: str,
) -> None:
    """Rows the server read, from EXPLAIN (ANALYZE, BUFFERS) of the page's statement."""
    url = f"/schools/{BIG}/members/explain"
    read: dict[tuple[bool, str, int], float] = {}
    for primitives in (True, False):
        async with serve(directory_dsn, primitives) as client:
            for label, filters, depth in (
                ("all", {}, 20_000),
                ("teachers", {"role": "teacher"}, 2_000),
                ("grade", {"grade": 5, "prefix": "M"}, 100),
            ):
                first = (await client.get(url, params={"limit": 50, **filters})).json()
                cursor = await _cursor_at(client, depth, **filters)
                deep = (
                    await client.get(url, params={"limit": 50, "cursor": cursor, **filters})
                ).json()
                assert first["mode"] == deep["mode"] == ("keyset" if primitives else "offset")
                read[(primitives, label, 0)] = first["rows_read"]
                read[(primitives, label, depth)] = deep["rows_read"]
                assert deep["shared_buffers"] > 0 and deep["execution_ms"] >= 0
    for label, depth in (("all", 20_000), ("teachers", 2_000), ("grade", 100)):
        assert read[(True, label, 0)] <= 51 and read[(True, label, depth)] <= 51, label
        assert read[(False, label, depth)] >= depth + 50, label


async def test_run_workload_reports_the_deep_page(directory_dsn: str) -> None:
    figures: dict[bool, dict[str, float]] = {}
    for primitives in (True, False):
        async with serve(directory_dsn, primitives) as client:
            result = await directory.run_workload(
                client, user_ids=[1, 2], paid_ids={2}, requests=60, seed=3
            )
        assert set(result.statuses) == {200}, result.statuses
        assert result.requests >= 60
        figures[primitives] = result.figures
    keyset, offset = figures[True], figures[False]
    assert keyset["deep_page_depth"] == offset["deep_page_depth"] == 25_000
    assert keyset["deep_page_rows_read"] <= 51 < 25_000 <= offset["deep_page_rows_read"]
    assert keyset["first_page_rows_read"] == offset["first_page_rows_read"] <= 51
    assert keyset["deep_page_buffers"] < offset["deep_page_buffers"]
    assert keyset["deep_page_ms"] > 0 and offset["deep_page_ms"] > 0


# -- pure ------------------------------------------------------------------------------------

_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=6
) | st.text(alphabet="ab\U0010ffff\ud7ff\ue000", max_size=6)


@given(prefix=_TEXT, name=_TEXT)
def test_prefix_range_is_exactly_the_names_with_that_prefix(prefix: str, name: str) -> None:
    end = directory.prefix_end(prefix)
    inside = prefix <= name and (end is None or name < end)
    assert inside == name.startswith(prefix)
    assert end is None or not "\ud800" <= end[-1] <= "\udfff"  # never a surrogate


def test_plan_figures_count_scanned_and_filtered_rows() -> None:
    plan = {
        "Execution Time": 1.5,
        "Plan": {
            "Node Type": "Limit",
            "Shared Hit Blocks": 3,
            "Shared Read Blocks": 2,
            "Plans": [
                {
                    "Node Type": "Index Scan",
                    "Actual Rows": 10,
                    "Rows Removed by Filter": 5,
                    "Actual Loops": 2,
                }
            ],
        },
    }
    assert directory.plan_figures(plan) == {
        "rows_read": 30.0,
        "shared_buffers": 5.0,
        "execution_ms": 1.5,
    }

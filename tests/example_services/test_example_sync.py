"""The sync service on real PostgreSQL (and Redis): a phone's copy converges to the
server after inserts, updates and deletes; tombstones delete; the per-tier interval
holds on a FakeClock; a cursor that cannot be continued gets a full resync; the
baseline (primitives=False) ends in the same state with more rows."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic_core import to_jsonable_python

from examples.common import ServiceConfig
from examples.sync_service import Phone, create_app, install, run_workload
from scalekit.sync import ChangeFeed
from scalekit.testing import FakeClock

COLUMNS = {
    "conversations": "id, user_id, title, message_count, created_at, updated_at",
    "messages": "id, conversation_id, user_id, role, body, created_at",
}


@contextlib.asynccontextmanager
async def served(config: ServiceConfig) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(config)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as http,
    ):
        yield http


@pytest.fixture
async def db(example_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """The test database with change tracking installed and three users (1 and 3
    free, 2 paid): user 1 has 2 conversations of 3 messages, user 2 one of 2."""
    conn = await asyncpg.connect(example_dsn)
    await install(conn)
    await install(conn)  # idempotent
    await conn.execute(
        "INSERT INTO users (id, name, tier) VALUES (1, 'ann', 'free'), (2, 'bob', 'paid'), "
        "(3, 'cy', 'free');"
        "INSERT INTO conversations (id, user_id, title, message_count) "
        "VALUES (10, 1, 'a', 3), (11, 1, 'b', 3), (20, 2, 'c', 2);"
        "INSERT INTO messages (conversation_id, user_id, role, body) "
        "SELECT c, u, CASE WHEN i % 2 = 0 THEN 'user' ELSE 'assistant' END, 'm' || i "
        "FROM (VALUES (10, 1, 3), (11, 1, 3), (20, 2, 2)) v(c, u, n), generate_series(1, n) i"
    )
    try:
        yield conn
    finally:
        await conn.close()


async def server_state(conn: asyncpg.Connection, user: int) -> dict[str, dict[int, Any]]:
    """The user's rows as a sync client sees them (JSON-encoded), by a direct query."""
    out = {}
    for table, columns in COLUMNS.items():
        rows = await conn.fetch(f"SELECT {columns} FROM {table} WHERE user_id = $1", user)
        out[table] = {r["id"]: to_jsonable_python(dict(r)) for r in rows}
    return out


def copy_of(phone: Phone) -> dict[str, dict[int, Any]]:
    return {"conversations": phone.conversations, "messages": phone.messages}


async def assert_converged(phone: Phone, conn: asyncpg.Connection) -> None:
    """The phone's copy is the server's rows of its user, row for row."""
    server = await server_state(conn, phone.user_id)
    for table, rows in server.items():
        copy = copy_of(phone)[table]
        assert sorted(copy) == sorted(rows), table
        for key, row in rows.items():
            assert copy[key] == row, (table, key)


async def change_everything(conn: asyncpg.Connection, http: httpx.AsyncClient) -> None:
    """Inserts, updates and deletes for users 1 and 2, in SQL and through the API."""
    await conn.execute(
        "INSERT INTO messages (conversation_id, user_id, role, body) VALUES (10, 1, 'user', 'x');"
        "UPDATE messages SET body = 'edited' WHERE id = (SELECT min(id) FROM messages "
        "  WHERE conversation_id = 11);"
        "DELETE FROM messages WHERE id = (SELECT max(id) FROM messages WHERE conversation_id = 11);"
        "UPDATE conversations SET title = 'renamed' WHERE id = 10;"
        "INSERT INTO messages (conversation_id, user_id, role, body) VALUES (20, 2, 'user', 'y')"
    )
    h = {"X-User-Id": "1"}
    new = await http.post("/conversations", json={"title": "api"}, headers=h)
    assert new.status_code == 201
    cid = new.json()["id"]
    added = await http.post(f"/conversations/{cid}/messages", json={"body": "hi"}, headers=h)
    assert added.status_code == 201
    mid = added.json()["id"]
    assert (
        await http.patch(f"/messages/{mid}", json={"body": "hi!"}, headers=h)
    ).status_code == 204
    # a conversation deleted with its messages (ON DELETE CASCADE): tombstones for all
    assert (await http.delete("/conversations/10", headers=h)).status_code == 204
    # another user's rows are not reachable
    assert (await http.delete("/conversations/20", headers=h)).status_code == 404
    assert (
        await http.patch(f"/messages/{mid}", json={"body": "z"}, headers={"X-User-Id": "2"})
    ).status_code == 404


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_a_phone_converges_to_the_server(
    db: asyncpg.Connection, example_dsn: str, backend: str, request: pytest.FixtureRequest
) -> None:
    redis_url = request.getfixturevalue("fresh_redis_url") if backend == "redis" else None
    clock = FakeClock()
    config = ServiceConfig(database_url=example_dsn, redis_url=redis_url, clock=clock)
    async with served(config) as http:
        ann, bob = Phone(1), Phone(2, "paid")
        first = await ann.sync(http)
        assert (first.status, first.reset, first.refetch) == (200, True, None)
        assert first.rows == 2 + 6
        await assert_converged(ann, db)
        await bob.sync(http)
        await assert_converged(bob, db)

        await change_everything(db, http)
        clock.advance(60)
        delta = await ann.sync(http)
        assert (delta.status, delta.reset) == (200, False)
        await assert_converged(ann, db)
        assert 10 not in ann.conversations and all(
            m["conversation_id"] != 10 for m in ann.messages.values()
        )
        # only what changed: conv 11 (its count), the API's conversation, its message,
        # the deleted conversation 10 and its messages, conv 11's edit and deletion
        assert delta.rows < first.rows + 6
        await bob.sync(http)
        await assert_converged(bob, db)

        clock.advance(60)
        idle = await ann.sync(http)
        assert (idle.status, idle.rows) == (200, 0)  # nothing changed: nothing sent


async def test_tombstones_delete_rows_from_the_copy(
    db: asyncpg.Connection, example_dsn: str
) -> None:
    clock = FakeClock()
    async with served(ServiceConfig(database_url=example_dsn, clock=clock)) as http:
        ann = Phone(1)
        await ann.sync(http)
        gone = await db.fetchval("SELECT min(id) FROM messages WHERE user_id = 1")
        assert gone in ann.messages
        await db.execute("DELETE FROM messages WHERE id = $1", gone)
        clock.advance(60)
        page = (await http.get("/sync", params={"cursor": ann.cursor}, headers=ann.headers)).json()
        assert page["messages"] == {"upserts": [], "deletes": [gone]}
        assert page["conversations"] == {"upserts": [], "deletes": []}
        ann.apply(page)
        assert gone not in ann.messages
        await assert_converged(ann, db)


@pytest.mark.parametrize("backend", ["memory", "redis"])
@pytest.mark.parametrize(("user", "tier", "interval"), [(1, "free", 60.0), (2, "paid", 30.0)])
async def test_each_tier_syncs_at_its_interval(
    db: asyncpg.Connection,
    example_dsn: str,
    backend: str,
    user: int,
    tier: str,
    interval: float,
    request: pytest.FixtureRequest,
) -> None:
    redis_url = request.getfixturevalue("fresh_redis_url") if backend == "redis" else None
    clock = FakeClock()
    config = ServiceConfig(database_url=example_dsn, redis_url=redis_url, clock=clock)
    async with served(config) as http:
        phone = Phone(user, tier)
        assert (await phone.sync(http)).status == 200
        early = await http.get("/sync", params={"cursor": phone.cursor}, headers=phone.headers)
        assert early.status_code == 429
        assert early.headers["Retry-After"] == str(int(interval))
        clock.advance(interval - 1)
        assert (await phone.sync(http)).status == 429
        clock.advance(1)
        assert (await phone.sync(http)).status == 200
        # the limit is per user: another user is not held back by this one
        other = Phone(3)
        assert (await other.sync(http)).status == 200


async def test_the_pages_of_one_sync_are_one_sync(db: asyncpg.Connection, example_dsn: str) -> None:
    clock = FakeClock()
    async with served(ServiceConfig(database_url=example_dsn, clock=clock)) as http:
        ann = Phone(1)
        outcome = await ann.sync(http, limit=2)  # 6 messages, 2 conversations: 3 pages
        assert (outcome.status, outcome.requests) == (200, 3)
        await assert_converged(ann, db)
        # the pass is over: the next call is a new sync, refused before the interval
        assert (await ann.sync(http, limit=2)).status == 429


async def test_a_cursor_behind_purged_tombstones_gets_a_full_resync(
    db: asyncpg.Connection, example_dsn: str
) -> None:
    clock = FakeClock()
    async with served(ServiceConfig(database_url=example_dsn, clock=clock)) as http:
        ann = Phone(1)
        await ann.sync(http)
        stale = dict(ann.messages)
        await db.execute("DELETE FROM messages WHERE id = (SELECT min(id) FROM messages)")
        assert await ChangeFeed("messages", secret="s" * 32).purge_tombstones(db, older_than=0) == 1
        clock.advance(60)
        outcome = await ann.sync(http)
        assert (outcome.status, outcome.reset, outcome.refetch) == (200, True, "purged")
        await assert_converged(ann, db)
        assert len(ann.messages) == len(stale) - 1
        # the fresh cursor continues normally
        await db.execute("UPDATE conversations SET title = 't' WHERE id = 11")
        clock.advance(60)
        after = await ann.sync(http)
        assert (after.status, after.reset, after.rows) == (200, False, 1)


async def test_a_forged_or_borrowed_cursor_is_a_400(
    db: asyncpg.Connection, example_dsn: str
) -> None:
    clock = FakeClock()
    async with served(ServiceConfig(database_url=example_dsn, clock=clock)) as http:
        ann = Phone(1)
        await ann.sync(http, limit=1)
        assert ann.cursor is not None
        clock.advance(60)
        body, _, mac = ann.cursor.rpartition(".")
        for bad in (ann.cursor[:-2], f"{body[:-1]}A.{mac}", "garbage", "x" * 9000, "."):
            answer = await http.get("/sync", params={"cursor": bad}, headers=ann.headers)
            assert answer.status_code in (400, 422), bad
            assert "Retry-After" not in answer.headers
        borrowed = await http.get("/sync", params={"cursor": ann.cursor}, headers=Phone(2).headers)
        assert borrowed.status_code == 400
        assert borrowed.json() == {"detail": "invalid cursor"}
        assert (await http.get("/sync")).status_code == 422  # no user: no sync
        assert (await ann.sync(http)).status == 200  # the real one still works


async def test_without_primitives_the_same_state_costs_more_rows(
    db: asyncpg.Connection, example_dsn: str
) -> None:
    outcomes = {}
    for primitives in (True, False):
        clock = FakeClock()
        config = ServiceConfig(database_url=example_dsn, clock=clock, primitives=primitives)
        async with served(config) as http:
            ann = Phone(1)
            rows = [(await ann.sync(http)).rows]
            await db.execute(
                "INSERT INTO messages (conversation_id, user_id, role, body) "
                "VALUES (11, 1, 'user', $1)",
                f"new {primitives}",
            )
            clock.advance(60)
            last = await ann.sync(http)
            assert last.reset is not primitives  # the baseline resets every time
            rows.append(last.rows)
            await assert_converged(ann, db)
            outcomes[primitives] = rows
            if not primitives:  # no limits: an immediate second sync is served
                assert (await ann.sync(http)).status == 200
    assert outcomes[True][1] == 1
    assert outcomes[False][1] == 2 + 6 + 2  # everything, both new messages included


@pytest.mark.parametrize("primitives", [True, False])
async def test_the_workload_reports_rows_synced_against_a_full_refetch(
    db: asyncpg.Connection, example_dsn: str, primitives: bool
) -> None:
    clock = FakeClock()
    config = ServiceConfig(database_url=example_dsn, clock=clock, primitives=primitives)
    async with served(config) as http:
        result = await run_workload(
            http, user_ids=[1, 2, 3], paid_ids={2}, requests=150, seed=7, clock=clock
        )
    figures = result.figures
    assert result.requests >= 150
    assert result.service == "sync_service"
    assert figures["syncs"] > 10 and figures["writes"] > 10
    assert set(result.statuses) <= {200, 201, 204, 429}
    if primitives:
        assert figures["rows_synced"] < figures["full_refetch_rows"] / 2
        assert result.statuses[429] == figures["refused_syncs"] > 0  # impatient phones
    else:
        assert figures["rows_synced"] == figures["full_refetch_rows"]
        assert figures["refused_syncs"] == 0
    # the phones' figures are what the server holds: re-running changes them
    async with served(config) as http:
        again = await run_workload(
            http, user_ids=[1, 2, 3], paid_ids={2}, requests=60, seed=8, clock=clock
        )
    assert again.figures != figures


async def test_through_pgbouncer(
    db: asyncpg.Connection, example_dsn: str, pgbouncer_dsn: str
) -> None:
    name = example_dsn.partition("?")[0].rsplit("/", 1)[1]
    base, _, query = pgbouncer_dsn.partition("?")
    dsn = f"{base.rsplit('/', 1)[0]}/{name}?" + "&".join(
        p for p in (query, "pooler=pgbouncer-transaction") if p
    )
    clock = FakeClock()
    async with served(ServiceConfig(database_url=dsn, clock=clock, pool_size=2)) as http:
        ann = Phone(1)
        await ann.sync(http, limit=2)
        await change_everything(db, http)
        clock.advance(60)
        await ann.sync(http, limit=2)
        await assert_converged(ann, db)
        # the health probe gets the DSN without the pool options
        ready = await http.get("/health/ready")
        assert ready.status_code == 200, ready.text


async def test_health_and_metrics_are_mounted(db: asyncpg.Connection, example_dsn: str) -> None:
    async with served(ServiceConfig(database_url=example_dsn)) as http:
        assert (await http.get("/health/live")).status_code == 200
        ready = await http.get("/health/ready")
        assert ready.status_code == 200, ready.text
        metrics = await http.get("/metrics", follow_redirects=True)  # mounted: /metrics/
        assert metrics.status_code == 200
        assert "scalekit_" in metrics.text


async def test_the_measure_script_compares_both_modes(example_dsn: str) -> None:
    from examples.sync_service.measure import measure, prepare, report

    await prepare(example_dsn, 30)
    results = await measure(example_dsn, users=30, requests=90, seed=3)
    off, on = results[False].figures, results[True].figures
    assert off["rows_synced"] == off["full_refetch_rows"] > 0
    assert 0 < on["rows_synced"] < on["full_refetch_rows"]
    text = report(results)
    assert "rows sent / full refetch" in text and "100.0%" in text
    with pytest.raises(SystemExit, match="already has users"):
        await prepare(example_dsn, 30)

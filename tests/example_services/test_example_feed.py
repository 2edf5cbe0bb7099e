"""feed_service on the suite's real PostgreSQL and Redis: keyset pages under writes,
signed cursors, batched authors, HTTP validators, the trending refresher and the
partition job; and the primitives=False baseline serving the same data."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from servers import PostgresServer, ServerUnavailable

from examples import feed_service as feed
from examples.common import ServiceConfig
from examples.feed_service._app import TRENDING_AHEAD, TRENDING_TTL
from scalekit.testing import FakeClock

pytestmark = pytest.mark.postgres

USERS = 40


async def prepare(dsn: str, *, users: int = USERS, fill: bool = True) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await feed.install(conn)
        await feed.install(conn)  # idempotent
        await conn.execute(
            "INSERT INTO users (id, name, tier) SELECT g, 'user ' || g, "
            "CASE WHEN g % 4 = 0 THEN 'paid' ELSE 'free' END FROM generate_series(1, $1) g",
            users,
        )
        if fill:
            await feed.seed(conn, users=users, seed=7)
    finally:
        await conn.close()


def config(dsn: str, **kw: Any) -> ServiceConfig:
    kw.setdefault("clock", FakeClock())  # no background loops: the tests drive the jobs
    return ServiceConfig(database_url=dsn, **kw)


@contextlib.asynccontextmanager
async def serve(
    cfg: ServiceConfig, **deps: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = feed.create_app(cfg, **deps)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            yield app, client


async def walk(
    client: httpx.AsyncClient,
    url: str,
    limit: int,
    between: Callable[[], Awaitable[None]] | None = None,
) -> list[dict[str, Any]]:
    """Every item of the listing at ``url``, page by page (``between`` runs after each)."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(10_000):
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        response = await client.get(url, params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        items += body["items"]
        if between is not None:
            await between()
        cursor = body["next"]
        if cursor is None:
            return items
    raise AssertionError("the listing never ended")


# -- pages ---------------------------------------------------------------------------


async def test_keyset_pages_complete_and_disjoint_under_concurrent_inserts(
    example_dsn: str,
) -> None:
    await prepare(example_dsn)
    conn = await asyncpg.connect(example_dsn)
    rng = random.Random(3)
    try:
        before = [r["id"] for r in await conn.fetch("SELECT id FROM posts")]

        async def insert_some(conn: asyncpg.Connection = conn) -> None:
            # a new post (lands before the pages read so far) and one backdated to a
            # random moment of the seeded range (lands ahead of or behind the reader)
            await conn.execute(
                "INSERT INTO posts (author_id, body) VALUES ($1, 'new')", rng.randint(1, USERS)
            )
            await conn.execute(
                "INSERT INTO posts (author_id, body, created_at) VALUES "
                "($1, 'backdated', now() - $2 * interval '90 days')",
                rng.randint(1, USERS),
                rng.random(),
            )

        async with serve(config(example_dsn)) as (_, client):
            writing = True

            async def writer() -> None:
                own = await asyncpg.connect(example_dsn)
                try:
                    while writing:  # writes racing the reader, besides those between pages
                        await insert_some(own)
                finally:
                    await own.close()

            task = asyncio.create_task(writer())
            try:
                items = await walk(client, "/feed", 7, between=insert_some)
            finally:
                writing = False
                await task
        ids = [i["id"] for i in items]
        assert len(ids) == len(set(ids)), "a row was served twice"
        assert set(before) <= set(ids), "a row that existed all along was skipped"
        # and the pages follow one another in the feed's order
        order = {
            r["id"]: (r["created_at"], r["id"])
            for r in await conn.fetch("SELECT id, created_at FROM posts WHERE id = ANY($1)", ids)
        }
        keys = [order[i] for i in ids]
        assert keys == sorted(keys, reverse=True)
        assert await conn.fetchval("SELECT count(*) FROM posts") > len(before) + 20
    finally:
        await conn.close()


async def test_offset_baseline_repeats_rows_when_posts_arrive(example_dsn: str) -> None:
    """The naive pages the demo measures against: a post written while someone
    scrolls pushes the rows down, and the next OFFSET page repeats one."""
    await prepare(example_dsn)
    conn = await asyncpg.connect(example_dsn)
    try:

        async def insert_one() -> None:
            await conn.execute("INSERT INTO posts (author_id, body) VALUES (1, 'new')")

        async with serve(config(example_dsn, primitives=False)) as (_, client):
            items = await walk(client, "/feed", 10, between=insert_one)
        ids = [i["id"] for i in items]
        assert len(ids) > len(set(ids))
    finally:
        await conn.close()


async def test_user_pages_are_that_users_posts_in_order(example_dsn: str) -> None:
    await prepare(example_dsn)
    conn = await asyncpg.connect(example_dsn)
    try:
        expected = [
            r["id"]
            for r in await conn.fetch(
                "SELECT id FROM posts WHERE author_id = 5 ORDER BY created_at DESC, id DESC"
            )
        ]
    finally:
        await conn.close()
    for primitives in (True, False):
        async with serve(config(example_dsn, primitives=primitives)) as (_, client):
            items = await walk(client, "/users/5/posts", 3)
        assert [i["id"] for i in items] == expected
        assert {i["author"]["id"] for i in items} == {5}


# -- cursors -------------------------------------------------------------------------


def _flip(cursor: str, at: int) -> str:
    c = cursor[at]
    return cursor[:at] + ("A" if c != "A" else "B") + cursor[at + 1 :]


async def test_tampered_or_foreign_cursor_is_a_400(example_dsn: str) -> None:
    await prepare(example_dsn)
    async with serve(config(example_dsn)) as (_, client):
        cursor = (await client.get("/feed", params={"limit": 5})).json()["next"]
        user1 = (await client.get("/users/1/posts", params={"limit": 1})).json()["next"]
        assert cursor and user1
        bad = [
            _flip(cursor, 10),  # in the payload
            _flip(cursor, len(cursor) - 3),  # in the signature
            cursor[:-1],
            cursor + "A",
            "c2" + cursor[2:],
            "not-a-cursor",
            "x" * 20_000,
        ]
        for token in bad:
            response = await client.get("/feed", params={"cursor": token})
            assert response.status_code == 400, token
            assert response.json() == {"detail": "invalid cursor"}
        # a cursor is bound to its listing and its parameters
        assert (await client.get("/users/1/posts", params={"cursor": cursor})).status_code == 400
        assert (await client.get("/users/2/posts", params={"cursor": user1})).status_code == 400
        assert (await client.get("/users/1/posts", params={"cursor": user1})).status_code == 200
    # and to the secret: another deployment's cursors are refused
    other = config(example_dsn, cursor_secret="another-secret-0123456789abcdef")
    async with serve(other) as (_, client):
        assert (await client.get("/feed", params={"cursor": cursor})).status_code == 400
    async with serve(config(example_dsn, primitives=False)) as (_, client):
        for token in ("abc", "-5", "1e3", "9" * 40):
            assert (await client.get("/feed", params={"cursor": token})).status_code == 400


# -- authors: one query per page ---------------------------------------------------------


async def _preloads_statements(dsn: str) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        libs = await conn.fetchval("SHOW shared_preload_libraries")
    finally:
        await conn.close()
    return "pg_stat_statements" in str(libs)


def _has_statements_library() -> bool:
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return False
    out = subprocess.run([pg_config, "--pkglibdir"], capture_output=True, text=True, check=False)
    return (Path(out.stdout.strip()) / "pg_stat_statements.so").exists()


@pytest.fixture(scope="module")
def counting_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL that loads pg_stat_statements, so the server itself counts the
    statements: ``SCALEKIT_TEST_POSTGRES_DSN`` if it does, else a private server
    (pg_ctl from PATH, the library preloaded with ALTER SYSTEM and a restart). The
    suite's own server does not preload it."""
    external = os.environ.get("SCALEKIT_TEST_POSTGRES_DSN")
    if external and asyncio.run(_preloads_statements(external)):
        yield external
        return
    if not _has_statements_library():
        pytest.skip("pg_stat_statements is not installed beside pg_ctl (PostgreSQL contrib)")
    try:
        server = PostgresServer(tmp_path_factory.mktemp("pg-statements"), method="pg_ctl").start()
    except ServerUnavailable as exc:
        pytest.skip(f"no private PostgreSQL for pg_stat_statements: {exc}")

    async def preload() -> None:
        conn = await asyncpg.connect(server.dsn)
        try:
            await conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        finally:
            await conn.close()

    try:
        asyncio.run(preload())
        server.restart()
        yield server.dsn
    finally:
        server.close()


async def _statements(conn: asyncpg.Connection, like: str) -> int:
    n = await conn.fetchval(
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
        "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND query LIKE $1",
        like,
    )
    return int(n)


class TestCountedByTheServer:
    @pytest.fixture
    def postgres_dsn(self, counting_postgres: str) -> str:
        """Here ``example_dsn`` makes its database on the server that counts."""
        return counting_postgres

    async def test_one_author_query_per_page_not_one_per_post(self, example_dsn: str) -> None:
        """Counted by PostgreSQL (pg_stat_statements), not by the service."""
        await prepare(example_dsn)
        conn = await asyncpg.connect(example_dsn)
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            counts: dict[bool, tuple[int, int]] = {}
            for primitives in (True, False):
                async with serve(config(example_dsn, primitives=primitives)) as (_, client):
                    await conn.fetchval("SELECT pg_stat_statements_reset()")
                    cursor: str | None = None
                    for _ in range(3):
                        params = {"limit": 10, **({"cursor": cursor} if cursor else {})}
                        body = (await client.get("/feed", params=params)).json()
                        assert len(body["items"]) == 10
                        assert all(i["author"] is not None for i in body["items"])
                        cursor = body["next"]
                    counts[primitives] = (
                        await _statements(conn, "%FROM users WHERE id%"),
                        await _statements(conn, "%FROM posts%"),
                    )
            assert counts[True] == (3, 3)  # a page: its posts, then its authors in one query
            assert counts[False] == (30, 3)  # N+1: one author query per post
        finally:
            await conn.close()


# -- HTTP caching ---------------------------------------------------------------------------


async def test_etag_and_cache_control_with_304_on_if_none_match(example_dsn: str) -> None:
    await prepare(example_dsn)
    conn = await asyncpg.connect(example_dsn)
    try:
        post_id = await conn.fetchval("SELECT min(id) FROM posts")
        async with serve(config(example_dsn)) as (_, client):
            for url in ("/trending", f"/posts/{post_id}", "/feed"):
                first = await client.get(url)
                etag = first.headers["etag"]
                assert first.status_code == 200 and etag.removeprefix("W/").startswith('"')
                assert "max-age=" in first.headers["cache-control"]
                bare = etag.removeprefix("W/")
                for header in (etag, bare, f"W/{bare}", f'"nope", {etag}', "*"):
                    again = await client.get(url, headers={"If-None-Match": header})
                    assert again.status_code == 304, (url, header)
                    assert again.content == b""
                    assert again.headers["etag"] == etag
                other = await client.get(url, headers={"If-None-Match": '"stale"'})
                assert other.status_code == 200
                # the same answer (a page's next cursor is minted anew: equivalent, not equal)
                assert _sans_cursor(other.json()) == _sans_cursor(first.json())
            # a change to the post changes its tag: the old one revalidates to a 200
            old = (await client.get(f"/posts/{post_id}")).headers["etag"]
            await conn.execute("UPDATE posts SET body = 'edited' WHERE id = $1", post_id)
            changed = await client.get(f"/posts/{post_id}", headers={"If-None-Match": old})
            assert changed.status_code == 200 and changed.json()["body"] == "edited"
            assert changed.headers["etag"] != old
        async with serve(config(example_dsn, primitives=False)) as (_, client):
            plain = await client.get("/trending", headers={"If-None-Match": "*"})
            assert plain.status_code == 200 and plain.json()["items"]
            assert "etag" not in plain.headers and "cache-control" not in plain.headers
    finally:
        await conn.close()


def _sans_cursor(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "next"}


# -- trending ------------------------------------------------------------------------------


@pytest.mark.redis
async def test_trending_refreshed_ahead_by_one_refresher_per_fleet(
    example_dsn: str, fresh_redis_url: str
) -> None:
    await prepare(example_dsn)
    clock = FakeClock()
    cfg = config(example_dsn, redis_url=fresh_redis_url, clock=clock)
    conn = await asyncpg.connect(example_dsn)
    try:
        async with serve(cfg) as (a, ca), serve(cfg) as (b, cb):
            jobs = [a.state.feed.trending_job, b.state.feed.trending_job]

            async def run_both() -> int:
                await asyncio.gather(*(j.arun_pending() for j in jobs))
                return sum(j.loads for j in jobs)

            assert await run_both() == 1  # two processes, one computation
            first = (await ca.get("/trending")).json()
            assert first["items"] and (await cb.get("/trending")).json() == first
            # a video nobody watched becomes the most watched one now
            newcomer = await conn.fetchval(
                "SELECT id FROM posts WHERE kind = 'video' AND id <> ALL($1) ORDER BY id LIMIT 1",
                [i["id"] for i in first["items"]],
            )
            await conn.execute(
                "INSERT INTO video_views (post_id, user_id) "
                "SELECT $1, 1 FROM generate_series(1, 5000)",
                newcomer,
            )
            views = await conn.fetchval(
                "SELECT count(*) FROM video_views WHERE post_id = $1 "
                "AND viewed_at >= now() - interval '7 days'",
                newcomer,
            )
            # readers keep reading the stored list until the next period: they never compute
            clock.advance(TRENDING_TTL - TRENDING_AHEAD - 1)
            assert await run_both() == 1
            assert (await ca.get("/trending")).json() == first
            assert (await cb.get("/trending")).json() == first
            clock.advance(2)  # five minutes after the first computation
            assert await run_both() == 2
            fresh = (await ca.get("/trending")).json()
            assert fresh["items"][0]["id"] == newcomer and fresh["items"][0]["views"] == views
            assert (await cb.get("/trending")).json() == fresh
            # the next period again by one of them
            clock.advance(TRENDING_TTL - TRENDING_AHEAD + 1)
            assert await run_both() == 3
        # without the primitives every request computes: the change shows at once
        await conn.execute(
            "INSERT INTO video_views (post_id, user_id) SELECT $1, 2 FROM generate_series(1, 10)",
            newcomer,
        )
        async with serve(config(example_dsn, primitives=False)) as (_, client):
            top = (await client.get("/trending")).json()["items"][0]
            assert (top["id"], top["views"]) == (newcomer, views + 10)
    finally:
        await conn.close()


async def test_trending_cold_start_loads_once_without_the_job(example_dsn: str) -> None:
    await prepare(example_dsn)
    async with serve(config(example_dsn)) as (app, client):
        bodies = await asyncio.gather(*(client.get("/trending") for _ in range(5)))
        assert len({b.text for b in bodies}) == 1
        stats = app.state.feed.cache.stats()
        assert stats.loads == 1


# -- partitions --------------------------------------------------------------------------------


def _month_after(name: str) -> datetime:
    year, month = int(name[-6:-2]), int(name[-2:])
    year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return datetime(year, month, 1, tzinfo=UTC)


async def _partitions(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'video_views'::regclass ORDER BY 1"
    )
    return [r["relname"] for r in rows]


async def test_partition_job_makes_months_ahead_and_retires_old_ones(example_dsn: str) -> None:
    await prepare(example_dsn)
    conn = await asyncpg.connect(example_dsn)
    try:
        now: datetime = await conn.fetchval("SELECT now()")
        parts = await _partitions(conn)
        assert len(parts) >= feed._db.VIEW_MONTHS  # type: ignore[attr-defined]
        horizon = now - timedelta(days=185)
        expired = [p for p in parts if _month_after(p) <= horizon]
        assert expired, parts  # the seed reaches further back than the retention
        expected = {
            (r["post_id"], r["month"]): r["n"]
            for r in await conn.fetch(
                "SELECT post_id, date_trunc('month', viewed_at AT TIME ZONE 'UTC')::date AS month, "
                "count(*) AS n FROM video_views WHERE viewed_at < $1 GROUP BY 1, 2",
                max(_month_after(p) for p in expired),
            )
        }
        total = await conn.fetchval("SELECT count(*) FROM video_views")
        # the partition of next month went missing: the job makes it again
        upcoming = max(parts)
        await conn.execute(f'DROP TABLE "{upcoming}"')
        async with serve(config(example_dsn)) as (app, client):
            report = (await client.post("/admin/maintenance")).json()
            assert report["ran"] and report["problems"] == []
            assert [p.split(".")[-1].strip('"') for p in report["created"]] == [upcoming]
            assert sorted(p.split(".")[-1].strip('"') for p in report["dropped"]) == expired
            assert sorted(p.split(".")[-1].strip('"') for p in report["rolled_up"]) == expired
            left = await _partitions(conn)
            assert not set(expired) & set(left) and upcoming in left
            rolled = {
                (r["post_id"], r["month"]): r["views"]
                for r in await conn.fetch("SELECT * FROM video_views_monthly")
            }
            assert rolled == expected  # every retired view counted once
            assert await conn.fetchval("SELECT count(*) FROM video_views") == total - sum(
                expected.values()
            )
            # a second run has nothing to do
            again = (await client.post("/admin/maintenance")).json()
            assert again["ran"] and not again["created"] and not again["dropped"]
            # while another worker holds the job's lock, this one skips the round
            key = app.state.feed.maintenance.key
            await conn.execute("SELECT pg_advisory_lock($1)", key)
            try:
                skipped = (await client.post("/admin/maintenance")).json()
                assert skipped["ran"] is False
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", key)
            # views of this month land in this month's partition
            video = await conn.fetchval("SELECT min(id) FROM posts WHERE kind = 'video'")
            r = await client.post(f"/posts/{video}/views", json={"user_id": 3})
            assert r.status_code == 204
            where = await conn.fetchval(
                "SELECT tableoid::regclass::text FROM video_views WHERE post_id = $1 "
                "ORDER BY viewed_at DESC LIMIT 1",
                video,
            )
            assert where == f"video_views_p{now.astimezone(UTC):%Y%m}"
    finally:
        await conn.close()


# -- writes and input ------------------------------------------------------------------------


async def test_writes_and_hostile_input(example_dsn: str) -> None:
    await prepare(example_dsn)
    conn = await asyncpg.connect(example_dsn)
    try:
        text_post = await conn.fetchval("SELECT min(id) FROM posts WHERE kind = 'text'")
    finally:
        await conn.close()
    async with serve(config(example_dsn)) as (_, client):
        made = await client.post("/posts", json={"author_id": 2, "body": "hi", "kind": "video"})
        assert made.status_code == 201 and made.json()["author"]["id"] == 2
        first = (await client.get("/feed", params={"limit": 1})).json()["items"][0]
        assert first["id"] == made.json()["id"]
        watcher = {"user_id": 1}
        video = made.json()["id"]
        assert (await client.post(f"/posts/{video}/views", json=watcher)).status_code == 204
        assert (await client.post(f"/posts/{text_post}/views", json=watcher)).status_code == 404
        assert (await client.get("/posts/999999999")).status_code == 404
        for url in (f"/posts/{2**64}", "/posts/0", "/posts/-1", f"/users/{2**63}/posts"):
            assert (await client.get(url)).status_code == 422, url
        assert (await client.get("/feed", params={"limit": 0})).status_code == 422
        assert (await client.get("/feed", params={"limit": 10_000})).status_code == 422
        unknown = await client.post("/posts", json={"author_id": 10_000, "body": "x"})
        assert unknown.status_code == 422
        huge = await client.post("/posts", json={"author_id": 1, "body": "x" * 5001})
        assert huge.status_code == 422
        nul = await client.post("/posts", json={"author_id": 1, "body": "a\x00b"})
        assert nul.status_code == 422  # PostgreSQL text cannot hold NUL: refused up front


# -- the baseline serves the same data ---------------------------------------------------------


async def test_primitives_off_serves_the_same_data(example_dsn: str) -> None:
    await prepare(example_dsn)
    seen: dict[bool, list[Any]] = {}
    for primitives in (True, False):
        async with serve(config(example_dsn, primitives=primitives)) as (_, client):
            items = await walk(client, "/feed", 13)
            mine = await walk(client, "/users/7/posts", 2)
            trending = (await client.get("/trending")).json()
            post = (await client.get(f"/posts/{items[5]['id']}")).json()
            seen[primitives] = [items, mine, trending, post]
    assert seen[True] == seen[False]
    assert len(seen[True][0]) == USERS * feed._db.POSTS_PER_USER  # type: ignore[attr-defined]


# -- health, metrics, workload ---------------------------------------------------------------


async def test_health_metrics_and_workload(example_dsn: str) -> None:
    await prepare(example_dsn)
    users = list(range(1, USERS + 1))
    paid = {u for u in users if u % 4 == 0}
    for primitives in (True, False):
        async with serve(config(example_dsn, primitives=primitives)) as (_, client):
            assert (await client.get("/health/live")).status_code == 200
            health = await client.get("/health/")
            assert health.status_code == 200 and health.json()["ready"] is True
            result = await feed.run_workload(
                client, user_ids=users, paid_ids=paid, requests=150, seed=5
            )
            metrics = await client.get("/metrics/")
            assert metrics.status_code == 200
        assert result.requests == 150
        assert set(result.statuses) <= {200, 201, 204, 304}, result.statuses
        assert result.figures["feed_pages"] > 0 and result.figures["trending_reads"] > 0
        if primitives:
            assert result.figures["not_modified"] > 0
            assert 'scalekit_loader_loads_total{loader="feed.authors"}' in metrics.text
        else:
            assert result.figures["not_modified"] == 0


async def test_background_jobs_run_from_the_lifespan(example_dsn: str) -> None:
    """With a real clock the lifespan runs the partition job and the refresher
    itself, and stops both when it ends."""
    await prepare(example_dsn, fill=False)
    app = feed.create_app(ServiceConfig(database_url=example_dsn))
    svc = app.state.feed
    async with app.router.lifespan_context(app):
        assert svc.background
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            assert (await client.get("/trending")).json() == {"items": []}
        tasks = list(svc._tasks)
        assert tasks and svc.maintenance._task is not None
    assert all(t.done() for t in tasks) and svc.maintenance._task is None


@pytest.mark.redis
async def test_trending_is_served_from_the_database_while_redis_is_down(
    example_dsn: str, redis_server: Any
) -> None:
    """The cache is an optimisation: with its Redis gone, readers compute the list
    (and the refresher retries later) instead of failing."""
    await prepare(example_dsn)
    async with serve(config(example_dsn, redis_url=redis_server.url)) as (app, client):
        job = app.state.feed.trending_job
        await job.arun_pending()
        assert job.loads == 1
        cached = (await client.get("/trending")).json()
        redis_server.stop()
        for _ in range(3):
            response = await client.get("/trending")
            assert response.status_code == 200 and response.json() == cached
        assert await job.arun_pending() == job.retry_after  # nothing stored: retry soon
        assert job.errors == 0

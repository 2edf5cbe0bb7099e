"""A feed of 50 posts with their authors: 1 author query instead of 50, counted by the server.

The authors are read through a PL/pgSQL function that increments a row of a
counter table each time a statement calls it, so the count is kept by the server,
not by the client under test. The same feed runs directly on PostgreSQL and
through PgBouncer in transaction mode (statement cache off).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from scalekit.batching import DataLoader, group_loader, request_scope, row_loader
from scalekit.pools import PgPool, PoolSettings

pytestmark = pytest.mark.postgres

N_POSTS = 50
N_AUTHORS = 17


@pytest.fixture
async def schema(postgres_dsn: str) -> AsyncIterator[str]:
    s = f"sk_feed_{uuid.uuid4().hex[:8]}"
    async with PgPool(PoolSettings(url=postgres_dsn, max_size=1)) as pool:
        await pool.execute(f"""
            CREATE SCHEMA {s};
            CREATE TABLE {s}.authors (id int PRIMARY KEY, name text NOT NULL);
            CREATE TABLE {s}.posts (id int PRIMARY KEY, author_id int NOT NULL, title text);
            CREATE TABLE {s}.comments (id int PRIMARY KEY, post_id int NOT NULL, body text);
            CREATE TABLE {s}.calls (name text PRIMARY KEY, n int NOT NULL);
            INSERT INTO {s}.calls VALUES ('authors', 0), ('comments', 0);
            INSERT INTO {s}.authors SELECT i, 'author ' || i FROM generate_series(1, {N_AUTHORS}) i;
            INSERT INTO {s}.posts
                SELECT i, (i % {N_AUTHORS}) + 1, 'post ' || i FROM generate_series(1, {N_POSTS}) i;
            -- posts divisible by 5 have no comments; the others have i % 3 + 1
            INSERT INTO {s}.comments
                SELECT p * 10 + c, p, 'c' || c FROM generate_series(1, {N_POSTS}) p,
                generate_series(1, 3) c WHERE p % 5 <> 0 AND c <= p % 3 + 1;
            CREATE FUNCTION {s}.authors_by_ids(ids int[]) RETURNS SETOF {s}.authors
            LANGUAGE plpgsql VOLATILE AS $$
            BEGIN
                UPDATE {s}.calls SET n = n + 1 WHERE name = 'authors';
                RETURN QUERY SELECT * FROM {s}.authors WHERE id = ANY(ids);
            END $$;
            CREATE FUNCTION {s}.comments_by_posts(ids int[]) RETURNS SETOF {s}.comments
            LANGUAGE plpgsql VOLATILE AS $$
            BEGIN
                UPDATE {s}.calls SET n = n + 1 WHERE name = 'comments';
                RETURN QUERY SELECT * FROM {s}.comments WHERE post_id = ANY(ids) ORDER BY id;
            END $$;
        """)
        try:
            yield s
        finally:
            await pool.execute(f"DROP SCHEMA {s} CASCADE")


async def _calls(pool: PgPool, schema: str, name: str) -> int:
    n: int = await pool.fetchval(f"SELECT n FROM {schema}.calls WHERE name = $1", name)
    return n


async def _render_feed(pool: PgPool, schema: str, authors: Any) -> list[dict[str, Any]]:
    posts = await pool.fetch(f"SELECT id, author_id, title FROM {schema}.posts ORDER BY id")

    async def item(post: Any) -> dict[str, Any]:
        author = await authors.load(post["author_id"])
        return {"post": post["id"], "author": author["name"] if author else None}

    return list(await asyncio.gather(*(item(p) for p in posts)))


@pytest.fixture(params=["postgres_dsn", "pgbouncer_dsn"])
async def feed_pool(request: pytest.FixtureRequest, schema: str) -> AsyncIterator[PgPool]:
    dsn: str = request.getfixturevalue(request.param)
    pooler = "direct" if request.param == "postgres_dsn" else "pgbouncer-transaction"
    async with PgPool(PoolSettings(url=dsn, max_size=10, pooler=pooler)) as pool:
        yield pool


async def test_feed_of_50_items_makes_one_author_query(feed_pool: PgPool, schema: str) -> None:
    pool = feed_pool
    expected = [
        {"post": i, "author": f"author {(i % N_AUTHORS) + 1}"} for i in range(1, N_POSTS + 1)
    ]

    # N+1: one author query per item
    class OneByOne:
        async def load(self, key: int) -> Any:
            return await pool.fetchrow(
                f"SELECT * FROM {schema}.authors_by_ids(ARRAY[$1::int])", key
            )

    before = await _calls(pool, schema, "authors")
    assert await _render_feed(pool, schema, OneByOne()) == expected
    assert await _calls(pool, schema, "authors") - before == N_POSTS

    # DataLoader: the 50 loads of one tick become one query for the 17 distinct authors
    authors = row_loader(pool, f"SELECT * FROM {schema}.authors_by_ids($1::int[])", key="id")
    before = await _calls(pool, schema, "authors")
    async with request_scope():
        assert await _render_feed(pool, schema, authors) == expected
        assert await _calls(pool, schema, "authors") - before == 1
        assert await _render_feed(pool, schema, authors) == expected  # the request's cache
        assert await _calls(pool, schema, "authors") - before == 1
    stats = authors.stats()
    assert (stats.loads, stats.keys_dispatched, stats.batches) == (100, N_AUTHORS, 1)
    assert stats.dedupe_ratio == pytest.approx(1 - N_AUTHORS / 100)


async def test_one_to_many_comments_in_one_query(feed_pool: PgPool, schema: str) -> None:
    pool = feed_pool
    comments = group_loader(
        pool, f"SELECT * FROM {schema}.comments_by_posts($1::int[])", key="post_id"
    )
    before = await _calls(pool, schema, "comments")
    async with request_scope():
        lists = await asyncio.gather(*(comments.load(p) for p in range(1, N_POSTS + 1)))
    assert await _calls(pool, schema, "comments") - before == 1
    for post, rows in zip(range(1, N_POSTS + 1), lists, strict=True):
        want = [] if post % 5 == 0 else [f"c{c}" for c in range(1, post % 3 + 2)]
        assert [r["body"] for r in rows] == want


async def test_max_batch_size_bounds_the_array_parameter(feed_pool: PgPool, schema: str) -> None:
    pool = feed_pool
    authors: DataLoader[int, Any] = row_loader(
        pool, f"SELECT * FROM {schema}.authors_by_ids($1::int[])", key="id", max_batch_size=5
    )
    before = await _calls(pool, schema, "authors")
    rows = await authors.load_many(range(1, N_AUTHORS + 1))
    assert [r["id"] for r in rows] == list(range(1, N_AUTHORS + 1))
    assert await _calls(pool, schema, "authors") - before == 4  # 5 + 5 + 5 + 2
    assert await authors.load(999) is None  # no such author

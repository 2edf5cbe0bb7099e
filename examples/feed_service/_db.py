"""The feed service's tables: install, seed, and the partition job that keeps them."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from scalekit.maintenance import Partitions

SCHEMA = Path(__file__).with_name("schema.sql")

#: posts per seeded user, views per seeded user, months of views (this one included)
POSTS_PER_USER = 4
VIEWS_PER_USER = 30
VIEW_MONTHS = 8

#: the job that keeps ``video_views`` in shape: this month's partition and the next
#: two exist before a view needs them; a partition whose end is more than ~6 months
#: ago is detached, its views summed into ``video_views_monthly`` and dropped (the
#: rollup and the drop in one transaction, so a month is counted exactly once)
VIEW_PARTITIONS = Partitions(
    "video_views",
    period="month",
    premake=2,
    keep=timedelta(days=185),
    rollup=(
        "INSERT INTO video_views_monthly (post_id, month, views) "
        "SELECT post_id, date_trunc('month', viewed_at AT TIME ZONE 'UTC')::date, count(*) "
        "FROM {partition} GROUP BY 1, 2 "
        "ON CONFLICT (post_id, month) DO UPDATE "
        "SET views = video_views_monthly.views + EXCLUDED.views"
    ),
    name="feed.video_views",
)

#: the same partitions made ahead, nothing expired: what ``install`` runs
_PREMAKE = Partitions("video_views", period="month", premake=2, name="feed.video_views.premake")


async def install(conn: Any) -> None:
    """The feed's tables and indexes on top of the shared schema, and the partitions
    of ``video_views`` for this month and the next two (idempotent)."""
    await conn.execute(SCHEMA.read_text())
    await _PREMAKE.run(conn)


_PAST_PARTITIONS = """
DO $$
DECLARE
    month0 timestamptz := date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    lo timestamptz;
    hi timestamptz;
    part text;
BEGIN
    FOR n IN 0 .. {months} - 1 LOOP
        lo := ((month0 AT TIME ZONE 'UTC') - make_interval(months => n)) AT TIME ZONE 'UTC';
        hi := ((lo AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC';
        part := 'video_views_p' || to_char(lo AT TIME ZONE 'UTC', 'YYYYMM');
        IF to_regclass(quote_ident(part)) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF video_views FOR VALUES FROM (%L) TO (%L)',
                part, lo, hi
            );
        END IF;
    END LOOP;
END
$$
"""

_SEED_POSTS = """
INSERT INTO posts (author_id, kind, body, created_at)
SELECT u.id,
       CASE WHEN random() < 0.3 THEN 'video' ELSE 'text' END,
       'post ' || g || ' by user ' || u.id,
       now() - random() * interval '90 days'
FROM (SELECT id FROM users ORDER BY id LIMIT $1) AS u
CROSS JOIN generate_series(1, $2) AS g
ORDER BY u.id, g
"""

# views skewed towards a few videos (power 3 of a uniform draw), a fifth of them in
# the last week (what trending reads), the rest spread over the months kept
_SEED_VIEWS = """
WITH videos AS (
    SELECT id, row_number() OVER (ORDER BY id) - 1 AS idx FROM posts WHERE kind = 'video'
), total AS (
    SELECT count(*) AS n FROM videos
), draws AS (
    SELECT u.id AS user_id, g, random() AS pick, random() AS at, random() AS recent
    FROM (SELECT id FROM users ORDER BY id LIMIT $1) AS u
    CROSS JOIN generate_series(1, $2) AS g
    ORDER BY u.id, g
), first AS (
    SELECT date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
           - make_interval(months => $3 - 1) AS at
)
INSERT INTO video_views (post_id, user_id, viewed_at)
SELECT v.id, d.user_id,
       CASE WHEN d.recent < 0.2 THEN now() - d.at * interval '7 days'
            ELSE first.at + d.at * (now() - first.at) END
FROM draws AS d
CROSS JOIN total
CROSS JOIN first
JOIN videos AS v ON v.idx = least(floor(power(d.pick, 3) * total.n)::bigint, total.n - 1)
"""


async def seed(conn: Any, *, users: int, seed: int) -> None:
    """Posts for the first ``users`` users (``POSTS_PER_USER`` each, the last 90 days,
    30 % videos) and their video views over the last ``VIEW_MONTHS`` months (in
    partitions made for them). Replaces earlier feed data; deterministic for a given
    ``seed`` and set of users, relative to the server's ``now()``."""
    async with conn.transaction():
        await conn.execute("TRUNCATE posts, video_views, video_views_monthly RESTART IDENTITY")
        await conn.execute(_PAST_PARTITIONS.replace("{months}", str(VIEW_MONTHS)))
        await conn.execute("SELECT setseed($1)", (seed % 1000) / 1000.0)
        await conn.execute(_SEED_POSTS, users, POSTS_PER_USER)
        await conn.execute(_SEED_VIEWS, users, VIEWS_PER_USER, VIEW_MONTHS)
    await conn.execute("ANALYZE posts")
    await conn.execute("ANALYZE video_views")
